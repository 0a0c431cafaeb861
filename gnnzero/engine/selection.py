"""Model selection and early stopping on a validation metric of the epoch log (accuracy for
node classification, ROC-AUC for link prediction: the task's ``metric``)."""
from __future__ import annotations

from typing import Any, Optional


def _best_by_validation(entries: list[dict], metric: str = "accuracy") -> dict:
    """The entry with the highest validation ``metric``, the earliest one on ties."""
    return max(entries, key=lambda e: (e[f"val_{metric}"], -e["epoch"]))


def best_validation_epoch(epoch_log: list[dict], metric: str = "accuracy"
                          ) -> Optional[dict[str, Any]]:
    """Model selection as in PyG's examples: the epoch with the best (exact) validation
    ``metric`` and the test ``metric`` measured at that epoch (None without such epochs)."""
    val, test = f"val_{metric}", f"test_{metric}"
    scored = [e for e in epoch_log if test in e and val in e]
    if not scored:
        return None
    best = _best_by_validation(scored, metric)
    return {"epoch": best["epoch"], val: best[val], test: best[test]}


def epochs_without_improvement(epoch_log: list[dict], metric: str = "accuracy") -> Optional[int]:
    """Epochs from the best validation accuracy (earliest on ties) to the last validated
    epoch; None before the first validation.  Every rank sees the same all-reduced
    accuracies, so early stopping on it stops all ranks at the same epoch."""
    scored = [e for e in epoch_log if f"val_{metric}" in e]
    if not scored:
        return None
    return scored[-1]["epoch"] - _best_by_validation(scored, metric)["epoch"]


def patience_exhausted(epoch_log: list[dict], patience: int,
                       metric: str = "accuracy") -> Optional[int]:
    """The epochs waited when ``patience`` (> 0) ran out, else None."""
    waited = epochs_without_improvement(epoch_log, metric)
    if patience and waited is not None and waited >= patience:
        return waited
    return None
