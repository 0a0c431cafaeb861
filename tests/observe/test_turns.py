"""gnnzero/observe/turns.py: two runs' epochs strictly alternate through one turn file; a run
that finishes early frees the other; a partner that takes no turn stops the waiting run."""
from __future__ import annotations

import threading
import time

import pytest

from gnnzero.errors import GnnZeroError
from gnnzero.observe.turns import TurnTaking, parse_turns
from gnnzero.utils.settings import SettingError
from gnnzero.config import parse_config


def _seat(path, seat, epochs, log, hold=0.01, **kwargs):
    turns = TurnTaking(str(path), seat, poll_seconds=0.001, **kwargs)
    for epoch in range(epochs):
        turns.wait()
        log.append(("start", seat, epoch))
        time.sleep(hold)          # "training": the other seat must not start meanwhile
        log.append(("end", seat, epoch))
        turns.done()
    turns.finish()


def _run_both(path, epochs0, epochs1):
    log: list = []
    threads = [threading.Thread(target=_seat, args=(path, seat, epochs, log))
               for seat, epochs in ((1, epochs1), (0, epochs0))]   # seat 1 starts first
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return log


def test_epochs_alternate_one_at_a_time_seat_zero_first(tmp_path):
    log = _run_both(tmp_path / "turns.json", 4, 4)
    expected = [(kind, seat, epoch) for epoch in range(4) for seat in (0, 1)
                for kind in ("start", "end")]
    assert log == expected


def test_a_run_that_stops_early_lets_the_other_go_on(tmp_path):
    log = _run_both(tmp_path / "turns.json", 2, 5)
    assert [entry for entry in log if entry[0] == "start"] == [
        ("start", 0, 0), ("start", 1, 0), ("start", 0, 1), ("start", 1, 1),
        ("start", 1, 2), ("start", 1, 3), ("start", 1, 4)]
    # still one at a time: every start directly follows an end (or is the first)
    assert all(log[i][0] == "end" for i in range(1, len(log), 2))


def test_a_partner_that_takes_no_turn_stops_the_wait(tmp_path):
    turns = TurnTaking(str(tmp_path / "turns.json"), 1, timeout=0.2, poll_seconds=0.01)
    with pytest.raises(GnnZeroError, match="took no turn for 0 s"):
        turns.wait()


@pytest.mark.parametrize("text", ["/tmp/t.json", "/tmp/t.json:2", ":0", "/tmp/t.json:x"])
def test_bad_turn_specs_are_refused_in_one_line(text):
    with pytest.raises(ValueError):
        parse_turns(text)
    with pytest.raises(SettingError) as info:
        parse_config(["--ds_config", "ds_configs/zero2.json", "--take-turns", text])
    assert str(info.value).startswith(f"--take-turns {text}: must be PATH:SEAT")
    assert "\n" not in str(info.value)


def test_a_good_spec_parses():
    assert parse_turns("/tmp/a:b/t.json:1") == ("/tmp/a:b/t.json", 1)
