"""Two runs that take turns epoch by epoch, for paired benchmarks (``benchmarks/paired.py``).

On a shared machine the speed drifts by tens of percent within a minute, so two runs made
one after the other (even alternated) see different machines, and their ratio carries that
drift.  Started together, each with the same turn file and its own seat (0 or 1), two runs
here train their epochs alternately: seat 0's first epoch, seat 1's first epoch, seat 0's
second, ...  Only one trains at a time, both see the machine as it is minute by minute, and
each run's training clock covers its own epochs only (the wait is outside it).

The file holds the number of turns taken, and only the run whose turn it is writes it
(atomically), so two runs need no lock; a seat that has finished says so in a file of its
own beside it (``PATH.finished-SEAT``).  Every rank of a run
waits for the run's turn; after the epoch, rank 0 passes the turn on once all the run's
ranks are done (:func:`gnnzero.utils.dist.barrier`).  A run that finishes early (early
stopping, ``--max-steps``) marks its seat finished and the other goes on alone; a partner
that takes no turn for ``timeout`` seconds (it failed) stops the waiting run with an error.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

from ..errors import GnnZeroError
from ..utils.dist import barrier, rank_world
from ..utils.atomic import atomic_json_dump

SEATS = 2


def parse_turns(text: str) -> tuple[str, int]:
    """``PATH:SEAT`` -> (path, seat); raises ValueError naming what is wrong."""
    path, sep, seat = text.rpartition(":")
    if not sep or not path or seat not in {str(s) for s in range(SEATS)}:
        raise ValueError("must be PATH:SEAT with SEAT 0 (trains first) or 1, e.g. "
                         "/tmp/pair.turns:0")
    return path, int(seat)


class TurnTaking:
    """Alternate this run's epochs with another run's through the file at ``path``."""

    def __init__(self, path: str, seat: int, timeout: float = 600.0,
                 poll_seconds: float = 0.002) -> None:
        self.path, self.seat, self.timeout, self.poll = path, seat, timeout, poll_seconds
        self.turns_taken = 0

    def _turn(self) -> int:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return int(json.load(handle)["turn"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return 0

    def _finished_file(self, seat: int) -> str:
        return f"{self.path}.finished-{seat}"

    def _partner_finished(self) -> bool:
        return any(os.path.exists(self._finished_file(s)) for s in range(SEATS) if s != self.seat)

    def wait(self) -> None:
        """Return when it is this run's turn (or the other seat has finished)."""
        mine = SEATS * self.turns_taken + self.seat
        seen, since = None, time.monotonic()
        while True:
            turn = self._turn()
            if turn >= mine or self._partner_finished():
                return
            if turn != seen:
                seen, since = turn, time.monotonic()
            elif time.monotonic() - since > self.timeout:
                raise GnnZeroError(f"--take-turns {self.path}: the run in the other seat took "
                                   f"no turn for {self.timeout:.0f} s (did it fail? see its "
                                   f"log); start both runs together")
            time.sleep(self.poll)

    def done(self) -> None:
        """Pass the turn on, once every rank of this run has finished its epoch."""
        barrier()
        self.turns_taken += 1
        if rank_world()[0] == 0:   # this seat's k-th turn is turn SEATS * k + seat
            atomic_json_dump({"turn": SEATS * self.turns_taken + self.seat - 1}, self.path)

    def finish(self) -> None:
        """This run trains no more: the other seat goes on without waiting for it.  Then wait
        (up to ``timeout``) for the other seat to finish too, so that what follows training
        here (the final evaluation) does not run beside the other's last epochs."""
        barrier()
        if rank_world()[0] == 0:
            atomic_json_dump({"turns_taken": self.turns_taken}, self._finished_file(self.seat))
        since = time.monotonic()
        while not self._partner_finished() and time.monotonic() - since < self.timeout:
            time.sleep(self.poll)


def turn_taking(spec: Optional[str]) -> Optional[TurnTaking]:
    """The :class:`TurnTaking` of a ``--take-turns PATH:SEAT`` value (None: train alone)."""
    if not spec:
        return None
    path, seat = parse_turns(spec)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return TurnTaking(path, seat)
