"""Build a directory exactly once, whoever asks for it at the same time.

The builder writes under ``<target>.tmp-<pid>-<random>`` and renames it into place,
so ``<target>`` exists only when complete.  An exclusive ``flock`` on
``<target>.lock`` makes one process build while the others wait: the wait has no
timeout (unlike a collective barrier, which DeepSpeed times out after 10 minutes),
and the kernel drops the lock if the builder dies, so the next waiter builds
again.  Where ``flock`` is not shared (some network file systems), two builders may
both finish: the second rename fails and its copy is discarded, so both see one
complete directory.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import sys
import uuid
from typing import Callable

STALE_SUFFIX = ".tmp-"


def _remove_stale(target: str) -> None:
    """Half-built copies left by killed builders (only called while holding the lock)."""
    for stale in glob.glob(glob.escape(target) + STALE_SUFFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def build_once(target: str, build: Callable[[str], None], what: str,
               is_complete: Callable[[str], bool] = os.path.isdir) -> bool:
    """Make ``target`` by ``build(tmp_dir)`` unless it exists; True if this call built it."""
    if is_complete(target):
        return False
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    with open(target + ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"waiting for another process to finish {what} ({target})", file=sys.stderr,
                  flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(target):
            return False
        _remove_stale(target)
        tmp = f"{target}{STALE_SUFFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.makedirs(tmp)
        try:
            build(tmp)
            _fsync_dir(tmp)
            os.rename(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and is_complete(target):
                return False          # another host finished first: keep its copy
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
