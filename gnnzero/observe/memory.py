"""Per-rank memory measurement: CUDA allocator on GPU, process RSS on CPU (labelled)."""
from __future__ import annotations

import os
import resource

import torch


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, object]:
    """Peak memory of this rank, with the kind of measurement named."""
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated",
                "peak_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
                "host_peak_rss_bytes": peak_rss_bytes()}
    return {"kind": "process_peak_rss", "peak_bytes": peak_rss_bytes(),
            "host_peak_rss_bytes": peak_rss_bytes()}


def allocated_bytes(device: torch.device) -> int:
    """Bytes currently allocated on ``device`` (RSS on CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    return current_rss_bytes()


def format_bytes(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(num) < 1024 or unit == "TiB":
            return f"{num:.1f} {unit}" if unit != "B" else f"{int(num)} B"
        num /= 1024
    return f"{num:.1f} TiB"
