"""The headline accuracy: the best-validation epoch's test accuracy when one was measured."""
from __future__ import annotations

from gnnzero.engine.selection import best_validation_epoch
from gnnzero.observe.metrics import headline_metric
from gnnzero.observe.report import _accuracy_rows

LOG = [{"epoch": 0, "val_accuracy": 0.60, "test_accuracy": 0.58},
       {"epoch": 1, "val_accuracy": 0.71, "test_accuracy": 0.69},
       {"epoch": 2, "val_accuracy": 0.71, "test_accuracy": 0.72},   # a tie: the earlier counts
       {"epoch": 3, "val_accuracy": 0.65, "test_accuracy": 0.74}]
FINAL_TEST = 0.745


def test_headline_is_the_best_validation_epoch_and_both_are_shown():
    headline = headline_metric(best_validation_epoch(LOG), FINAL_TEST)
    assert headline == {"source": "best-validation epoch", "epoch": 1, "metric": "accuracy",
                        "test_accuracy": 0.69}
    rows = dict(_accuracy_rows({"headline": headline, "test_accuracy": 0.745}))
    assert rows == {"test accuracy (headline: best-validation epoch 1)": "0.6900",
                    "test accuracy (last epoch, final model)": "0.7450"}


def test_without_a_validated_test_split_the_last_epoch_is_the_headline():
    log = [{"epoch": 0, "val_accuracy": 0.6}]          # sampled validation: no test figure
    headline = headline_metric(best_validation_epoch(log), FINAL_TEST)
    assert headline == {"source": "last epoch", "epoch": None, "metric": "accuracy",
                        "test_accuracy": 0.745}
    assert _accuracy_rows({"headline": headline, "test_accuracy": 0.745}) == \
        [("test accuracy (headline: last epoch)", "0.7450")]
