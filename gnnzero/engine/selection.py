"""Model selection and early stopping on the validation accuracy of the epoch log."""
from __future__ import annotations

from typing import Any, Optional


def _best_by_validation(entries: list[dict]) -> dict:
    """The entry with the highest validation accuracy, the earliest one on ties."""
    return max(entries, key=lambda e: (e["val_accuracy"], -e["epoch"]))


def best_validation_epoch(epoch_log: list[dict]) -> Optional[dict[str, Any]]:
    """Model selection as in PyG's examples: the epoch with the best (exact) validation
    accuracy and the test accuracy measured at that epoch (None without such epochs)."""
    scored = [e for e in epoch_log if "test_accuracy" in e and "val_accuracy" in e]
    if not scored:
        return None
    best = _best_by_validation(scored)
    return {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
            "test_accuracy": best["test_accuracy"]}


def epochs_without_improvement(epoch_log: list[dict]) -> Optional[int]:
    """Epochs from the best validation accuracy (earliest on ties) to the last validated
    epoch; None before the first validation.  Every rank sees the same all-reduced
    accuracies, so early stopping on it stops all ranks at the same epoch."""
    scored = [e for e in epoch_log if "val_accuracy" in e]
    if not scored:
        return None
    return scored[-1]["epoch"] - _best_by_validation(scored)["epoch"]


def patience_exhausted(epoch_log: list[dict], patience: int) -> Optional[int]:
    """The epochs waited when ``patience`` (> 0) ran out, else None."""
    waited = epochs_without_improvement(epoch_log)
    if patience and waited is not None and waited >= patience:
        return waited
    return None
