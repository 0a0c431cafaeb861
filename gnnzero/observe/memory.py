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


def status_kib(field: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/self/status (0 where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_rss_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# Peaks folded in before a per-step reset, so the run's peak survives step-level measurement.
_run_peak = {"allocated": 0, "reserved": 0, "rss_reset": False, "rss_at_reset": 0, "rss_steps": 0,
             "rss_folded": 0}


def reset_peak(device: torch.device) -> None:
    """Start the run's peak window: CUDA peak stats, and the host's peak RSS where Linux allows."""
    _run_peak.update(allocated=0, reserved=0, rss_at_reset=current_rss_bytes(), rss_steps=0,
                     rss_folded=0)
    _run_peak["rss_reset"] = reset_rss_high_water_mark()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def reset_step_peak(device: torch.device) -> int:
    """Start a step's CUDA peak window (keeping the run's peak); return bytes allocated now."""
    if device.type != "cuda":
        return 0
    _run_peak["allocated"] = max(_run_peak["allocated"], torch.cuda.max_memory_allocated(device))
    _run_peak["reserved"] = max(_run_peak["reserved"], torch.cuda.max_memory_reserved(device))
    torch.cuda.reset_peak_memory_stats(device)
    return int(torch.cuda.memory_allocated(device))


def begin_step_rss_window() -> None:
    """Start measuring one training step's peak RSS (the run's peak so far is kept)."""
    if _run_peak["rss_reset"]:
        _run_peak["rss_folded"] = max(_run_peak["rss_folded"], status_kib("VmHWM") * 1024)
        reset_rss_high_water_mark()


def end_step_rss_window() -> int:
    """Peak RSS of the step since :func:`begin_step_rss_window`; the max over steps is kept."""
    if not _run_peak["rss_reset"]:
        return 0
    peak = status_kib("VmHWM") * 1024
    _run_peak["rss_steps"] = max(_run_peak["rss_steps"], peak)
    return peak


def step_peak_rss_bytes() -> int:
    """Largest RSS seen inside a training step (0 where Linux does not let us reset VmHWM)."""
    return int(_run_peak["rss_steps"])


def training_peak_rss_bytes() -> int:
    """Peak RSS since :func:`reset_peak` (VmHWM), or the process's lifetime peak where unresettable."""
    hwm = status_kib("VmHWM") * 1024
    if not (_run_peak["rss_reset"] and hwm):
        return peak_rss_bytes()
    return max(hwm, _run_peak["rss_folded"])


def peak_memory(device: torch.device) -> dict[str, object]:
    """Peak memory of this rank, with the kind of measurement named.

    GPU (``cuda_max_allocated``): ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``
    since :func:`reset_peak`.  CPU (``process_peak_rss``): the process's lifetime peak RSS.
    Both also give ``host_training_peak_rss_bytes`` (peak RSS since :func:`reset_peak`,
    Linux VmHWM; it includes the dataset already in RAM, hence ``rss_at_train_start_bytes``)
    and ``host_step_peak_rss_bytes`` (largest RSS inside a training step, evaluation excluded).
    """
    host = {"host_peak_rss_bytes": peak_rss_bytes(),
            "host_training_peak_rss_bytes": training_peak_rss_bytes(),
            "rss_at_train_start_bytes": int(_run_peak["rss_at_reset"]),
            "host_step_peak_rss_bytes": step_peak_rss_bytes()}
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated",
                "peak_bytes": int(max(_run_peak["allocated"], torch.cuda.max_memory_allocated(device))),
                "peak_reserved_bytes": int(max(_run_peak["reserved"],
                                               torch.cuda.max_memory_reserved(device))),
                **host}
    return {"kind": "process_peak_rss", "peak_bytes": host["host_peak_rss_bytes"], **host}


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
