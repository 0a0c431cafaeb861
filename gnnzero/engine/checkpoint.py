"""Checkpoint and resume through DeepSpeed's own ``save_checkpoint`` / ``load_checkpoint``.

Each save goes to a new tag (``step<N>``); DeepSpeed rewrites the ``latest``
pointer only after every rank has written its shard, so a process killed
during a save leaves ``latest`` on the previous, complete checkpoint.  Beside
DeepSpeed's files each tag holds ``gnnzero_meta.json`` (model shape, world
size, ZeRO stage), checked before loading so a mismatched checkpoint gets a
clear message instead of a tensor-shape traceback.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any, Optional

import numpy as np
import torch

from ..errors import GnnZeroError
from ..utils.atomic import atomic_json_dump
from .runtime import barrier

META_FILE = "gnnzero_meta.json"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_tag(checkpoint_dir: str) -> Optional[str]:
    path = os.path.join(checkpoint_dir, "latest")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip() or None


def save(engine, checkpoint_dir: str, global_step: int, client_state: dict[str, Any],
         meta: dict[str, Any], keep: int = 2) -> str:
    """Save a checkpoint tagged ``step<global_step>``; keep the newest ``keep`` tags."""
    tag = f"step{global_step}"
    if engine.global_rank == 0:
        atomic_json_dump(meta, os.path.join(checkpoint_dir, tag, META_FILE))
    engine.save_checkpoint(checkpoint_dir, tag=tag, client_state=client_state)
    barrier()
    if engine.global_rank == 0 and keep > 0:
        tags = sorted((d for d in os.listdir(checkpoint_dir) if d.startswith("step")
                       and os.path.isdir(os.path.join(checkpoint_dir, d))),
                      key=lambda d: int(d[4:]) if d[4:].isdigit() else -1)
        for old in tags[:-keep]:
            if old != tag:
                shutil.rmtree(os.path.join(checkpoint_dir, old), ignore_errors=True)
    return os.path.join(checkpoint_dir, tag)


def check_compatible(checkpoint_dir: str, tag: str, meta: dict[str, Any]) -> None:
    """Raise a one-line error naming what differs between the checkpoint and this run."""
    path = os.path.join(checkpoint_dir, tag, META_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs run {v!r}" for k, v in meta.items()
             if k in saved and saved[k] != v]
    if diffs:
        raise GnnZeroError(f"checkpoint {os.path.join(checkpoint_dir, tag)} does not match this "
                           f"run ({'; '.join(diffs)}); resume with the same settings or use a "
                           f"new --output-dir")


def load(engine, checkpoint_dir: str, meta: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Load the latest checkpoint in ``checkpoint_dir``; return its client state (None if none)."""
    tag = latest_tag(checkpoint_dir)
    if tag is None:
        return None
    check_compatible(checkpoint_dir, tag, meta)
    try:
        path, client_state = engine.load_checkpoint(checkpoint_dir, tag=tag)
    except (RuntimeError, KeyError, AssertionError, ValueError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise GnnZeroError(f"cannot load checkpoint {os.path.join(checkpoint_dir, tag)}: {text}; "
                           f"it was written by a different model or world size") from exc
    if path is None:
        raise GnnZeroError(f"checkpoint {os.path.join(checkpoint_dir, tag)} is incomplete; "
                           f"delete it or point 'latest' at an earlier tag")
    return client_state


def export_fp32_state_dict(checkpoint_dir: str, tag: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Consolidated fp32 ``state_dict`` from a (ZeRO-partitioned) checkpoint, for the plain model."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag)
    return {k: v.float() for k, v in state.items()}
