"""Fixed models, graph batches and DeepSpeed configs shared by the engine worker and its tests.

The worker (``engine_worker.py``, run under ``deepspeed --num_gpus N``) trains
each :class:`Case` through the DeepSpeed engine; the pytest process rebuilds the
same model from the same seed and trains it with plain ``torch.optim.AdamW`` on
every rank's batches, averaging gradients as DDP does.  Nothing here is the code
under test except ``build_model`` (both sides use it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch_geometric.data import Data

DS_CONFIGS = Path(__file__).resolve().parents[3] / "ds_configs"
IN_CHANNELS, HIDDEN, OUT_CHANNELS = 8, 16, 3
STEPS = 5
SEED = 1234
LR, BETAS, EPS, WEIGHT_DECAY = 0.01, (0.9, 0.999), 1e-8, 5e-4
CLIP = 0.05  # small enough to bite on these batches (the test checks that it does)


@dataclass(frozen=True)
class Case:
    """One engine configuration to compare against plain PyTorch."""

    stage: int
    model: str = "dense"              # dense | shared (rank-4 low-rank, weights shared)
    accum: int = 1                    # graph mini-batches per optimizer step
    clip: float = 0.0
    act_ckpt: bool = False
    offload: bool = False             # ZeRO optimizer offload to CPU (DeepSpeedCPUAdam)
    precision: str = "fp32"
    steps: int = STEPS
    config_file: Optional[str] = None  # a shipped ds_configs/*.json used as it is
    sparse: bool = False              # x reaches the engine as a torch CSR tensor

    @property
    def name(self) -> str:
        if self.config_file:
            return f"{Path(self.config_file).stem}-{self.model}"
        extras = [f"k{self.accum}"] if self.accum > 1 else []
        extras += ["clip"] if self.clip else []
        extras += ["ackpt"] if self.act_ckpt else []
        extras += ["offload"] if self.offload else []
        extras += [self.precision] if self.precision != "fp32" else []
        extras += ["sparse"] if self.sparse else []
        return "-".join([f"z{self.stage}", self.model, *extras])


EQUALITY_CASES = [Case(stage, model) for stage in (0, 1, 2, 3) for model in ("dense", "shared")] + [
    Case(2, "dense", accum=2, clip=CLIP),
    Case(3, "shared", accum=2, clip=CLIP),
    Case(3, "dense", act_ckpt=True),
    Case(3, "shared", act_ckpt=True),
] + [Case(stage, model, sparse=True) for stage, model in
     ((0, "dense"), (1, "shared"), (2, "dense"), (3, "shared"))] + [
    Case(3, "dense", act_ckpt=True, sparse=True)]
# The shipped offload configs as they are (lr 0.01, weight decay 5e-4, clipping 1.0;
# zero3_offload.json also offloads the parameters).
OFFLOAD_CASES = [Case(2, "dense", clip=1.0, offload=True, config_file="zero2_offload.json"),
                 Case(3, "shared", clip=1.0, offload=True, config_file="zero3_offload.json")]
BF16_CASES = [Case(2, "dense", precision="bf16", steps=8), Case(3, "shared", precision="bf16", steps=8),
              Case(3, "shared", precision="bf16", steps=8, sparse=True)]
# Checkpoint/resume: uninterrupted 6 steps vs 3 steps + save + fresh engine + load + 3 steps.
RESUME_CASES = [Case(1, "dense", steps=6), Case(2, "shared", accum=2, steps=6, clip=CLIP),
                Case(3, "shared", steps=6)]
RESUME_AT = 3


def build_case_model(case: Case, seed: int = SEED, hidden: int = HIDDEN) -> torch.nn.Module:
    """The case's model with deterministic initial weights (dropout 0)."""
    from gnnzero.models import build_model

    torch.manual_seed(seed)
    if case.model == "dense":
        return build_model("sage", IN_CHANNELS, hidden, OUT_CHANNELS, 2, dropout=0.0,
                           activation_checkpointing=case.act_ckpt)
    # Four layers: convs 1 and 2 are the hidden-to-hidden pair that share weights
    # (with three layers there is a single hidden conv and nothing to share).
    model = build_model("sage", IN_CHANNELS, hidden, OUT_CHANNELS, 4, share_weights=True,
                        rank=4, dropout=0.0, activation_checkpointing=case.act_ckpt)
    assert len(model.shared_cores) > 0, "the shared-weight model must share something"
    return model


def graph_batch(rank: int, step: int, micro: int) -> Data:
    """A small random graph with one hub node; differs per rank, step and micro-batch."""
    gen = torch.Generator().manual_seed(10_000 * rank + 100 * step + micro)
    num_nodes = 24 + 5 * rank + (step + micro) % 4
    num_edges = 4 * num_nodes
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    hub = torch.arange(num_nodes)  # node 0 receives from everyone
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([hub, torch.zeros_like(hub)])], 1)
    loss_mask = torch.rand(num_nodes, generator=gen) < 0.6
    loss_mask[0] = True
    return Data(x=torch.randn(num_nodes, IN_CHANNELS, generator=gen), edge_index=edge_index,
                y=torch.randint(0, OUT_CHANNELS, (num_nodes,), generator=gen), loss_mask=loss_mask)


def step_batches(case: Case, rank: int, step: int) -> list[Data]:
    """The micro-batches of one step; for a sparse case, x keeps a third of its entries and
    is a CSR tensor (the reference densifies it back)."""
    batches = [graph_batch(rank, step, micro) for micro in range(case.accum)]
    if case.sparse:
        for micro, batch in enumerate(batches):
            gen = torch.Generator().manual_seed(7 + 10_000 * rank + 100 * step + micro)
            keep = torch.rand(batch.x.shape, generator=gen) < 0.3
            batch.x = (batch.x * keep).to_sparse_csr()
    return batches


def ds_config(case: Case) -> dict:
    """The DeepSpeed config a case trains with (before ``finalize_for_device``)."""
    if case.config_file:
        config = json.loads((DS_CONFIGS / case.config_file).read_text())
        assert config["optimizer"]["params"] == {"lr": LR, "betas": list(BETAS), "eps": EPS,
                                                 "weight_decay": WEIGHT_DECAY}
        assert config["gradient_clipping"] == case.clip
        assert config["zero_optimization"]["stage"] == case.stage
        return config
    zero: dict = {"stage": case.stage}
    if case.stage == 3:
        zero["stage3_param_persistence_threshold"] = 0  # partition every parameter
    if case.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": case.accum,
        "gradient_clipping": case.clip,
        "steps_per_print": 10 ** 9,
        "optimizer": {"type": "AdamW", "params": {"lr": LR, "betas": list(BETAS), "eps": EPS,
                                                  "weight_decay": WEIGHT_DECAY}},
        "bf16": {"enabled": case.precision == "bf16"},
        "zero_optimization": zero,
    }


def shape_changed(case: Case) -> torch.nn.Module:
    """The case's model with a wider hidden layer (for the shape-mismatch check)."""
    return build_case_model(case, hidden=2 * HIDDEN)
