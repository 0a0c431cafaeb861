"""Markdown tables of benchmark records (the report reads figures, never recomputes them)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from gnnzero.observe.memory import format_bytes
from gnnzero.observe.report import markdown_table


def save_records(results: Path, stem: str,
                 records: list[dict[str, Any]]) -> tuple[Path, Path, Path, dict[str, Any]]:
    """Write ``results/<stem>.jsonl`` (one JSON record a line).

    Returns its path, the ``.md`` and ``.png`` paths beside it, and the environment the
    first record was measured in (``{}`` without records).
    """
    jsonl, md, png = (Path(results) / f"{stem}.{ext}" for ext in ("jsonl", "md", "png"))
    with open(jsonl, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return jsonl, md, png, (records[0]["environment"] if records else {})


def write_result(out: Path, result: dict[str, Any], text: str) -> None:
    """A benchmark's ``<out>.json`` (every figure) and ``<out>.md`` (``text``), also printed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(text)
    print(text)


def _mib(value: Optional[float]) -> str:
    return "" if value is None else format_bytes(value)


def _x(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}x"


def _split(split: Optional[dict]) -> str:
    if not split:
        return ""
    total = sum(split.values()) or 1.0
    return "/".join(f"{100 * split[k] / total:.0f}" for k in
                    ("sampling", "forward", "backward", "optimizer"))


BENCH_COLUMNS = ["config", "rank", "test", "peak", "model states", "ZeRO formula",
                 "measured/formula", "activations", "batch", "working set", "WS vs baseline",
                 "peak vs baseline", "train nodes/s", "thr vs baseline", "s/f/b/o %"]


def _rate(record: dict[str, Any]) -> str:
    """Training nodes per second, or scored pairs per second for a link run."""
    if record.get("task") == "link":
        return f"{record['train_pairs_per_s']:,.0f} pairs"
    return f"{record['train_nodes_per_s']:,.0f}"


def _test(record: dict[str, Any]) -> str:
    """The test figure of a record: accuracy, or ROC-AUC for a link run."""
    if record.get("test_metric") == "auc":
        return f"AUC {record['test_auc']:.3f}"
    return f"{record['test_accuracy']:.3f}"


def bench_rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for r in records:
        formula = ((r.get("zero_formula_bytes") or {}).get("all_devices") or {}).get("total")
        rows.append({
            "config": r["config"], "rank": r["rank"], "test": _test(r),
            "peak": f"{_mib(r['peak_bytes'])} ({r['memory_kind']})",
            "model states": _mib(r["model_state_bytes"].get("total")),
            "ZeRO formula": _mib(formula),
            "measured/formula": _x(r.get("model_state_measured_over_formula")),
            "activations": _mib((r.get("activation_bytes") or {}).get("peak")),
            "batch": _mib(r.get("batch_bytes_peak")), "working set": _mib(r["working_set_bytes"]),
            "WS vs baseline": _x(r.get("working_set_over_baseline")),
            "peak vs baseline": _x(r.get("peak_over_baseline")),
            "train nodes/s": _rate(r),
            "thr vs baseline": _x(r.get("throughput_over_baseline")),
            "s/f/b/o %": _split(r.get("step_time_split_s")),
        })
    return rows


def bench_markdown(records: list[dict[str, Any]], header: str) -> str:
    return f"{header}\n\n{markdown_table(bench_rows(records), BENCH_COLUMNS)}\n"


SCALING_COLUMNS = ["loader", "nodes", "edges", "epoch time s", "working set", "activations",
                   "batch", "peak RSS", "step peak RSS above start", "train nodes/s"]


def scaling_rows(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for r in sorted(records, key=lambda r: (r["loader"], r["num_nodes"])):
        rows.append({
            "loader": r["loader"], "nodes": f"{r['num_nodes']:,}", "edges": f"{r['num_edges']:,}",
            "epoch time s": f"{r['epoch_time_s']:.2f}", "working set": _mib(r["working_set_bytes"]),
            "activations": _mib((r.get("activation_bytes") or {}).get("peak")),
            "batch": _mib(r.get("batch_bytes_peak")), "peak RSS": _mib(r["peak_bytes"]),
            "step peak RSS above start": _mib(r.get("training_rss_increment_bytes")),
            "train nodes/s": _rate(r),
        })
    return rows


def growth_verdict(records: list[dict[str, Any]], key: str = "working_set_bytes") -> list[str]:
    """Per loader: how much ``key`` grew from the smallest to the largest graph."""
    lines = []
    loaders = sorted({r["loader"] for r in records})
    for loader in loaders:
        rows = sorted((r for r in records if r["loader"] == loader and r.get(key)),
                      key=lambda r: r["num_nodes"])
        if len(rows) < 2:
            continue
        size_ratio = rows[-1]["num_nodes"] / rows[0]["num_nodes"]
        growth = rows[-1][key] / rows[0][key]
        exponent = math.log(growth) / math.log(size_ratio) if size_ratio > 1 else 0.0
        shape = "grows with the graph" if exponent > 0.7 else \
            ("nearly flat" if exponent < 0.2 else "grows sub-linearly")
        lines.append(f"- {loader}: {growth:.1f}x over a {size_ratio:.0f}x larger graph "
                     f"({_mib(rows[0][key])} -> {_mib(rows[-1][key])}, ~N^{exponent:.2f}): {shape}")
    return lines
