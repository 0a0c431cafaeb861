"""Atomic file writes: a crash mid-write never leaves a truncated file behind."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temp file in the same folder, then rename over ``path``."""
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_json_dump(obj: Any, path: str) -> None:
    """Write ``obj`` as indented JSON atomically."""
    text = json.dumps(obj, indent=2, default=str).encode() + b"\n"
    _atomic_write(path, lambda handle: handle.write(text))
