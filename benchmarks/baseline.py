"""Plain PyG + ``torch.optim.AdamW`` baseline: the same model, batches and loop as
launch/train.py, without DeepSpeed.

    python benchmarks/baseline.py --ds_config ds_configs/zero0.json [the same flags as train.py]

The ds_config gives the optimizer's hyper-parameters, gradient accumulation and
clipping, so both runs optimise identically; the baseline always trains in fp32
on one process (rank 0 of a world of one: the batches a 1-rank DeepSpeed run
sees).  Only the engine differs (``gnnzero.engine.plain.PlainEngine``); it writes
``metrics.json`` with the same fields and ``engine: plain-pyg``.
"""
from __future__ import annotations

from gnnzero.config import parse_config
from gnnzero.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    from gnnzero.run import run

    from gnnzero.observe.metrics import test_figure, training_rate

    metrics = run(parse_config(argv), plain=True)
    metric, value = test_figure(metrics)
    unit = "pairs" if metrics.get("task") == "link" else "nodes"
    print(f"baseline: test {metric} {value:.4f}  epoch {metrics['epoch_time_s']:.2f} s"
          f"  {training_rate(metrics):,.0f} train {unit}/s", flush=True)


if __name__ == "__main__":
    main()
