"""Run under ``deepspeed --num_gpus N``: layer-wise inference of a seeded model over a prepared
directory, each rank saving the logits of its rows (``OUT/rank<r>.pt``) for the test to
compare with a whole-graph forward.

    deepspeed --num_gpus 2 tests/engine/workers/layerwise_worker.py PREPARED OUT SCRATCH
"""
from __future__ import annotations

import sys

import torch

from gnnzero.data.prepared import open_prepared
from gnnzero.engine.layerwise import layerwise_inference
from gnnzero.engine.runtime import init_distributed
from tests.engine.workers.layerwise_cases import LAYERWISE_CASES, seeded_model


def main(prepared: str, out: str, scratch: str) -> None:
    rank, _, device = init_distributed(-1)
    dataset = open_prepared(prepared)
    for name in LAYERWISE_CASES:
        model = seeded_model(name, dataset)
        result = layerwise_inference(model, dataset, device, batch_size=150,
                                     scratch_dir=f"{scratch}/{name}")
        torch.save({"node_ids": result.node_ids.clone(), "logits": result.logits.clone()},
                   f"{out}/{name}-rank{rank}.pt")


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
