"""Checkpoint and resume through DeepSpeed's own ``save_checkpoint`` / ``load_checkpoint``.

Each save goes to a new tag (``step<N>``).  DeepSpeed's ``latest`` pointer is
not a safe commit marker: rank 0 writes it as soon as *its own* files are done,
before the barrier, so a rank killed mid-save can leave ``latest`` naming a
checkpoint with a missing shard (and the file is rewritten in place, so a kill
can also leave it empty).  We therefore save with ``save_latest=False`` and,
only after every rank has passed the barrier, rank 0 atomically writes
``gnnzero_meta.json`` into the tag (the tag is complete exactly when that file
exists) and then ``latest``.  Loading takes ``latest`` when it names a complete
tag, else the newest complete tag, so a process killed during a save leaves the
previous checkpoint loadable.

The meta file also records the model's parameter shapes, world size and ZeRO
stage; it is compared with the run before loading, so a mismatched checkpoint
gets a one-line message naming what differs instead of a tensor-shape traceback.
"""
from __future__ import annotations

import glob
import json
import os
import random
import shutil
from typing import Any, Optional

import numpy as np
import torch

from ..errors import GnnZeroError
from ..models.builders import plain_state_dict
from ..utils.atomic import _atomic_write, atomic_json_dump
from ..utils.dist import barrier, gather_objects, rank_world

META_FILE = "gnnzero_meta.json"
TAG_PREFIX = "step"
RNG_KEY = "rng_per_rank"


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


def parameter_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """Full shape of every parameter (``ds_shape`` once ZeRO-3 has partitioned it)."""
    return {name: list(getattr(p, "ds_shape", p.shape)) for name, p in model.named_parameters()}


def _step_of(tag: str) -> int:
    return int(tag[len(TAG_PREFIX):]) if tag[len(TAG_PREFIX):].isdigit() else -1


def is_complete(checkpoint_dir: str, tag: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint_dir, tag, META_FILE))


def step_tags(checkpoint_dir: str) -> list[str]:
    """``step<N>`` tag folders, oldest first (complete or not)."""
    if not os.path.isdir(checkpoint_dir):
        return []
    tags = [d for d in os.listdir(checkpoint_dir)
            if d.startswith(TAG_PREFIX) and _step_of(d) >= 0
            and os.path.isdir(os.path.join(checkpoint_dir, d))]
    return sorted(tags, key=_step_of)


def latest_tag(checkpoint_dir: str) -> Optional[str]:
    """The tag to resume from: ``latest`` if that checkpoint is complete, else the newest complete one."""
    path = os.path.join(checkpoint_dir, "latest")
    named = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            named = handle.read().strip() or None
    if named and is_complete(checkpoint_dir, named):
        return named
    tags = step_tags(checkpoint_dir)
    complete = [t for t in tags if is_complete(checkpoint_dir, t)]
    if complete:
        return complete[-1]
    if not tags and named and os.path.isdir(os.path.join(checkpoint_dir, named)):
        return named  # written by plain DeepSpeed (no step<N> tags, no meta): trust 'latest'
    return None


def save(engine, checkpoint_dir: str, global_step: int, client_state: dict[str, Any],
         meta: dict[str, Any], keep: int = 2) -> str:
    """Save a checkpoint tagged ``step<global_step>`` on every rank; keep the newest ``keep``.

    ``client_state`` is stored by DeepSpeed; every rank's RNG state is added to it.
    """
    tag = f"{TAG_PREFIX}{global_step}"
    rank, _ = rank_world()
    # Every rank's RNG state: each rank draws its own dropout masks.
    client_state = {**client_state, RNG_KEY: gather_objects(rng_state())}
    if rank == 0 and os.path.exists(os.path.join(checkpoint_dir, tag, META_FILE)):
        os.unlink(os.path.join(checkpoint_dir, tag, META_FILE))  # being rewritten: not complete
    barrier()
    engine.save_checkpoint(checkpoint_dir, tag=tag, client_state=client_state, save_latest=False)
    barrier()  # every rank's shard is on disk
    if rank == 0:
        atomic_json_dump(meta, os.path.join(checkpoint_dir, tag, META_FILE))
        _atomic_write(os.path.join(checkpoint_dir, "latest"), lambda h: h.write(tag.encode()))
        _prune(checkpoint_dir, tag, keep)
    barrier()
    return os.path.join(checkpoint_dir, tag)


def _prune(checkpoint_dir: str, current: str, keep: int) -> None:
    """Keep the newest ``keep`` complete tags up to ``current``; drop the rest (incl. partial ones)."""
    if keep <= 0:
        return
    tags = step_tags(checkpoint_dir)
    kept = [t for t in tags if is_complete(checkpoint_dir, t)
            and _step_of(t) <= _step_of(current)][-keep:]
    for tag in tags:
        if tag not in kept:
            shutil.rmtree(os.path.join(checkpoint_dir, tag), ignore_errors=True)


def _flatten(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def meta_differences(saved: dict[str, Any], run: dict[str, Any], limit: int = 4,
                     partial: bool = False) -> list[str]:
    """Human-readable differences between a checkpoint's meta and this run's, at most ``limit``
    (``partial``: only the keys ``run`` has, e.g. before the dataset is loaded)."""
    old, new = _flatten(saved), _flatten(run)
    diffs = []
    for key in list(new) + ([] if partial else [k for k in old if k not in new]):
        if old.get(key, "absent") != new.get(key, "absent"):
            if key.startswith("parameters.") and (key not in old or key not in new):
                where = "only in the checkpoint" if key in old else "only in this run"
                diffs.append(f"parameter {key[len('parameters.'):]} {where}")
            elif key.startswith("parameters."):
                diffs.append(f"parameter {key[len('parameters.'):]} shape {old[key]} in checkpoint"
                             f" vs {new[key]} in this run")
            else:
                diffs.append(f"{key} {old.get(key, 'absent')!r} in checkpoint vs "
                             f"{new.get(key, 'absent')!r} in this run")
    if len(diffs) > limit:
        diffs = diffs[:limit] + [f"and {len(diffs) - limit} more"]
    return diffs


def check_compatible(checkpoint_dir: str, tag: str, meta: dict[str, Any],
                     partial: bool = False) -> None:
    """Raise a one-line error naming what differs between the checkpoint and this run."""
    path = os.path.join(checkpoint_dir, tag, META_FILE)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    diffs = meta_differences(saved, meta, partial=partial)
    if diffs:
        raise GnnZeroError(f"checkpoint {os.path.join(checkpoint_dir, tag)} does not match this "
                           f"run: {'; '.join(diffs)}; resume with the settings it was trained "
                           f"with or use a new --output-dir")


def missing_checkpoint(checkpoint_dir: str) -> GnnZeroError:
    """The one-line error of ``--resume`` (on) without a complete checkpoint."""
    return GnnZeroError(f"--resume: {checkpoint_dir} holds no complete checkpoint; use "
                        f"--resume auto to start fresh when there is none, or point "
                        f"--output-dir at the run to continue")


def check_resumable(checkpoint_dir: str, mode: str, meta: dict[str, Any]) -> None:
    """``--resume`` checked from the files alone, before the data and the engine are built:
    ``on`` needs a complete checkpoint, and the config-level settings in ``meta`` must match
    it (the dataset fingerprint and parameter shapes are compared later, in :func:`load`)."""
    if mode == "off":
        return
    tag = latest_tag(checkpoint_dir)
    if tag is None:
        if mode == "on":
            raise missing_checkpoint(checkpoint_dir)
        return
    check_compatible(checkpoint_dir, tag, meta, partial=True)


def load(engine, checkpoint_dir: str, meta: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Load the newest complete checkpoint in ``checkpoint_dir`` and restore this rank's RNG.

    Returns DeepSpeed's client state plus ``checkpoint_path``, or None if there is none.
    """
    tag = latest_tag(checkpoint_dir)
    if tag is None:
        return None
    path = os.path.join(checkpoint_dir, tag)
    check_compatible(checkpoint_dir, tag, meta)
    try:
        load_path, client_state = engine.load_checkpoint(checkpoint_dir, tag=tag)
    except (RuntimeError, KeyError, AssertionError, ValueError, FileNotFoundError) as exc:
        text = " ".join(str(exc).split())[:200]
        raise GnnZeroError(f"cannot load checkpoint {path}: {text}; it was written by a different "
                           f"model, ZeRO stage or world size, or is damaged") from exc
    if load_path is None:
        raise GnnZeroError(f"checkpoint {path} is incomplete; delete it or point "
                           f"{os.path.join(checkpoint_dir, 'latest')} at an earlier tag")
    client_state = dict(client_state or {})
    states = client_state.pop(RNG_KEY, None)
    rank, _ = rank_world()
    if states is not None and rank < len(states):
        set_rng_state(states[rank])
    client_state["checkpoint_path"] = path
    return client_state


def export_fp32_state_dict(checkpoint_dir: str, tag: Optional[str] = None) -> dict[str, torch.Tensor]:
    """Consolidated fp32 ``state_dict`` of a (ZeRO-partitioned) checkpoint, for the plain model.

    ZeRO 1-3: DeepSpeed's ``zero_to_fp32`` merges the fp32 master partitions.
    ZeRO 0 has no partitions: the module weights in the model-states file are used.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag = tag or latest_tag(checkpoint_dir)
    if tag is None:
        raise GnnZeroError(f"no complete checkpoint in {checkpoint_dir}; train with checkpoints "
                           f"enabled first")
    folder = os.path.join(checkpoint_dir, tag)
    if not glob.glob(os.path.join(folder, "*optim_states.pt")):
        states = sorted(glob.glob(os.path.join(folder, "mp_rank_*_model_states.pt")))
        if not states:
            raise GnnZeroError(f"{folder} holds no DeepSpeed checkpoint files")
        module = torch.load(states[0], map_location="cpu", weights_only=False)["module"]
        return plain_state_dict({k: v.float() for k, v in module.items()})
    state = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag)
    return plain_state_dict({k: v.float() for k, v in state.items()})
