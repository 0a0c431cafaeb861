"""Checkpoint tags without a DeepSpeed launch: a save killed half-way is skipped, and a meta
mismatch names what differs.  (Saving and loading through the engine: test_runtime.py.)"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gnnzero.engine import checkpoint as ckpt
from gnnzero.errors import GnnZeroError


def _tag(root: Path, step: int, complete: bool) -> None:
    (root / f"step{step}").mkdir(parents=True)
    (root / f"step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        (root / f"step{step}" / ckpt.META_FILE).write_text("{}")


def test_resume_tag_skips_a_save_killed_half_way(tmp_path):
    _tag(tmp_path, 2, True)
    _tag(tmp_path, 4, True)
    _tag(tmp_path, 6, False)                        # killed during the save
    (tmp_path / "latest").write_text("step6")       # DeepSpeed's rank 0 wrote it early
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    (tmp_path / "latest").write_text("")            # killed while rewriting 'latest'
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    (tmp_path / "latest").write_text("step2")       # 'latest' is trusted when complete
    assert ckpt.latest_tag(str(tmp_path)) == "step2"
    os.unlink(tmp_path / "latest")
    assert ckpt.latest_tag(str(tmp_path)) == "step4"
    ckpt._prune(str(tmp_path), "step4", keep=1)
    assert ckpt.step_tags(str(tmp_path)) == ["step4"]


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    assert ckpt.latest_tag(str(tmp_path / "missing")) is None
    _tag(tmp_path, 3, False)
    (tmp_path / "latest").write_text("step3")
    assert ckpt.latest_tag(str(tmp_path)) is None


def test_meta_differences_name_what_differs(tmp_path):
    saved = {"parameters": {"a.weight": [16, 8], "b.bias": [4]}, "world_size": 2, "zero_stage": 3,
             "model": {"hidden": 16}}
    run = {"parameters": {"a.weight": [32, 8], "c.bias": [4]}, "world_size": 1, "zero_stage": 3,
           "model": {"hidden": 32}}
    _tag(tmp_path, 5, False)
    (tmp_path / "step5" / ckpt.META_FILE).write_text(json.dumps(saved))
    with pytest.raises(GnnZeroError) as info:
        ckpt.check_compatible(str(tmp_path), "step5", run)
    message = str(info.value)
    assert "\n" not in message
    for part in ("parameter a.weight shape [16, 8] in checkpoint vs [32, 8] in this run",
                 "parameter c.bias only in this run", "world_size 2 in checkpoint vs 1 in this run",
                 "and 1 more"):
        assert part in message, message
    ckpt.check_compatible(str(tmp_path), "step5", saved)  # identical: no error


def test_resume_is_checked_from_the_files_before_any_data_load(tmp_path):
    """``check_resumable`` (called by run.setup before the dataset is built): a missing
    checkpoint for --resume on, and a config-level mismatch, are one-line errors; keys only the
    checkpoint has (its dataset fingerprint, parameter shapes) wait for the full check."""
    import json

    import pytest

    from gnnzero.engine.checkpoint import META_FILE, check_resumable
    from gnnzero.errors import GnnZeroError

    folder = tmp_path / "checkpoints"
    with pytest.raises(GnnZeroError, match="holds no complete checkpoint; use --resume auto"):
        check_resumable(str(folder), "on", {"seed": 0})
    check_resumable(str(folder), "auto", {"seed": 0})         # nothing to resume: fine
    tag = folder / "step4"
    tag.mkdir(parents=True)
    saved = {"seed": 0, "loader": {"kind": "cluster"}, "dataset": {"fingerprint": "abc"},
             "parameters": {"lin.weight": [2, 3]}}
    (tag / META_FILE).write_text(json.dumps(saved))
    (folder / "latest").write_text("step4")
    check_resumable(str(folder), "on", {"seed": 0, "loader": {"kind": "cluster"}})
    with pytest.raises(GnnZeroError, match=r"loader.kind 'cluster' in checkpoint vs 'full' in "
                                           r"this run"):
        check_resumable(str(folder), "on", {"seed": 0, "loader": {"kind": "full"}})
    check_resumable(str(folder), "off", {"seed": 1})
