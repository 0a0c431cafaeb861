"""gnnzero/config.py: the config tree (defaults written once, every bad value refused with one
line naming the flag), through parse_config and through launch/train.py's main()."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gnnzero.config import (SECTIONS, RunConfig, build_parser, catalogue_markdown,
                            flag_catalogue, parse_config)
from gnnzero.utils.settings import SettingError, cli_fields, flag_of
from tests.helpers import assert_one_line_error


@pytest.mark.parametrize("flag,value,needle", [
    ("--model", "transformer", "--model transformer: must be one of gcn, sage"),
    ("--loader", "random", "--loader random: must be one of cluster"),
])
def test_unknown_choice(run_main, flag, value, needle):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", flag, value])
    assert_one_line_error(proc, needle)


@pytest.mark.parametrize("extra,needle", [
    (["--eval-every", "0"], "--eval-every 0: must be >= 1"),
    (["--pca-components", "-2"], "--pca-components -2: must be >= 0"),
    (["--patience", "-1"], "--patience -1: must be >= 0"),
    (["--eval-every", "5", "--patience", "3"], "--patience 3: must be 0 (off) or >= --eval-every (5)"),
])
def test_bad_validation_schedule(run_main, extra, needle):
    proc = run_main(["--ds_config", "ds_configs/zero2.json", *extra])
    assert_one_line_error(proc, needle)



REPO = Path(__file__).resolve().parents[1]
BASE = ["--ds_config", "ds_configs/zero2.json"]


def refused(args: list[str]) -> str:
    with pytest.raises(SettingError) as info:
        parse_config(BASE + args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_come_from_the_sections():
    """No flag given: the tree equals the dataclasses' own defaults (the parser adds none)."""
    assert parse_config(BASE) == RunConfig(ds_config=BASE[1])
    for section in SECTIONS.values():
        for f in cli_fields(section):
            assert f.metadata["help"], f"{flag_of(f)} has no help text"


@pytest.mark.parametrize("args, names", [
    (["--loader", "saint-rw", "--batch-size", "0"], ["--batch-size 0", ">= 1"]),
    (["--clusters-per-batch", "0"], ["--clusters-per-batch 0", ">= 1"]),
    (["--rank", "0"], ["--rank 0", ">= 1", "none (dense)"]),
    (["--hidden", "-3"], ["--hidden -3", ">= 1"]),
    (["--dropout", "1.0"], ["--dropout 1.0", "< 1"]),
    (["--epochs", "0"], ["--epochs 0", ">= 1"]),
    (["--keep-checkpoints", "0"], ["--keep-checkpoints 0", ">= 1"]),
    (["--pca-components", "-1"], ["--pca-components -1", ">= 0"]),
    (["--lr", "-1"], ["--lr -1", ">= 0"]),
    (["--grad-accum", "0"], ["--grad-accum 0", ">= 1"]),
    (["--num-nodes", "3"], ["--num-nodes 3", ">= 10"]),
    (["--avg-degree", "0"], ["--avg-degree 0", "> 0"]),
])
def test_out_of_range_numbers(args, names):
    message = refused(args)
    for name in names:
        assert name in message, message


def test_fan_out_must_match_the_layers():
    message = refused(["--loader", "neighbor", "--layers", "3", "--num-neighbors", "5"])
    assert "--num-neighbors 5" in message and "--layers is 3" in message
    assert refused(["--loader", "neighbor", "--num-neighbors", "5,0"]).startswith(
        "--num-neighbors 5,0")
    # Without --num-neighbors the fan-out follows --layers.
    assert parse_config(BASE + ["--loader", "neighbor", "--layers", "3"]).loader.num_neighbors \
        == [10, 10, 10]


def test_model_cross_checks():
    assert "--model gat only" in refused(["--model", "sage", "--heads", "4"])
    assert "must divide --hidden 10" in refused(["--model", "gat", "--heads", "4",
                                                 "--hidden", "10"])


def test_flags_of_another_loader_are_refused():
    assert "--walk-length applies to --loader saint-rw only" in refused(
        ["--loader", "cluster", "--walk-length", "3"])
    assert "--num-parts applies to --loader cluster" in refused(
        ["--loader", "full", "--num-parts", "8"])


LINK = ["--task", "link"]


@pytest.mark.parametrize("args, names", [
    (LINK + ["--val-fraction", "0"], ["--val-fraction 0", "> 0", "< 1"]),
    (LINK + ["--test-fraction", "1"], ["--test-fraction 1", "< 1"]),
    (LINK + ["--val-fraction", "0.5", "--test-fraction", "0.5"],
     ["--test-fraction 0.5", "with --val-fraction 0.5 hides every edge"]),
    (LINK + ["--decoder", "bilinear"], ["--decoder bilinear", "one of dot, mlp"]),
    (LINK + ["--neg-ratio", "0"], ["--neg-ratio 0", "> 0"]),
    (LINK + ["--hits-at", "0"], ["--hits-at 0", ">= 1"]),
    (LINK + ["--loader", "saint-rw"], ["--loader saint-rw", "--task link trains on --loader "
                                                            "full / cluster / neighbor"]),
    (["--task", "edges"], ["--task edges", "one of node, link"]),
    (["--decoder", "mlp"], ["--decoder applies to --task link only", "add --task link"]),
    (["--val-fraction", "0.2"], ["--val-fraction applies to --task link only"]),
])
def test_link_settings_are_checked(args, names):
    message = refused(args)
    for name in names:
        assert name in message, message


def test_link_defaults_follow_pygs_example():
    task = parse_config(BASE + LINK).task
    assert (task.val_fraction, task.test_fraction, task.decoder) == (0.05, 0.1, "dot")


def test_evaluation_and_patience_cross_checks():
    assert "--eval-every (5)" in refused(["--eval-every", "5", "--patience", "3"])
    assert "--sampled-eval-nodes N > 0" in refused(["--eval-method", "sampled"])
    assert "not full-graph" in refused(["--eval-method", "full-graph",
                                        "--sampled-eval-nodes", "100"])


def test_resume_modes():
    assert parse_config(BASE).checkpoint.resume == "off"
    assert parse_config(BASE + ["--resume"]).checkpoint.resume == "on"
    assert parse_config(BASE + ["--resume", "auto", "--epochs", "2"]).checkpoint.resume == "auto"
    assert "--resume maybe" in refused(["--resume", "maybe"])


@pytest.mark.parametrize("args, text", [
    (["--micro-batch", "2"], "--micro-batch is not a gnnzero flag"),
    (["--hidden", "abc"], "invalid int value"),
    (["--model", "mlp"], "--model mlp: must be one of gcn"),
    (["--zero-stage", "5"], "--zero-stage 5: must be one of 0, 1, 2, 3"),
])
def test_parser_errors_are_one_line(args, text, capsys):
    try:
        parse_config(BASE + args)
    except SettingError as exc:
        message = str(exc)
    except SystemExit as exc:
        assert exc.code == 2
        message = capsys.readouterr().err.strip()
        assert message.count("\n") == 0
    assert text in message, message


def test_config_round_trips_through_its_dict():
    cfg = parse_config(BASE + ["--model", "gat", "--heads", "2", "--pca-components", "16",
                               "--loader", "neighbor", "--num-neighbors", "4,3"])
    assert RunConfig.from_dict(cfg.as_dict()) == cfg
    tree = cfg.as_dict()
    tree["model"]["colour"] = "blue"
    with pytest.raises(Exception, match="unknown settings colour"):
        RunConfig.from_dict(tree)
    tree = cfg.as_dict()
    tree["model"]["rank"] = 0
    with pytest.raises(SettingError, match="--rank 0"):
        RunConfig.from_dict(tree)


def test_every_flag_is_catalogued_and_the_readme_lists_them():
    parser_flags = {o for a in build_parser()._actions for o in a.option_strings
                    if o.startswith("--") and o not in ("--help", "--local_rank",
                                                        "--deepspeed_config")}
    catalogued = {row["flag"] for row in flag_catalogue()}
    assert parser_flags == catalogued
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- flags:begin -->\n(.*?)\n<!-- flags:end -->", readme, re.S)
    assert block, "README lacks the generated flag catalogue"
    assert block.group(1).strip() == catalogue_markdown().strip(), \
        "README's flag catalogue is stale: paste gnnzero.config.catalogue_markdown()"


def test_readme_lists_every_checked_ds_config_key():
    from gnnzero.engine.ds_schema import schema_markdown

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- ds-keys:begin -->\n(.*?)\n<!-- ds-keys:end -->", readme, re.S)
    assert block and block.group(1).strip() == schema_markdown().strip(), \
        "README's ds_config key catalogue is stale: paste ds_schema.schema_markdown()"


def test_no_component_imports_the_config_tree():
    """config.py sits on top: data/, models/, engine/ and observe/ never import it (or the
    builder / run modules above it)."""
    import ast

    for folder in ("data", "models", "engine", "observe", "utils"):
        for path in (REPO / "gnnzero" / folder).glob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    name = ("." * node.level) + (node.module or "")
                    top = name.lstrip(".").split(".")[0] if node.level >= 2 else ""
                    assert not (node.level >= 2 and top in ("config", "builder", "run", "inspect")) \
                        and (node.module or "") not in ("gnnzero.config", "gnnzero.builder",
                                                        "gnnzero.run"), f"{path}: {name}"


HETERO = ["--ds_config", "x.json", "--dataset", "synthetic-hetero", "--loader", "neighbor"]


@pytest.mark.parametrize("extra, needle", [
    (["--loader", "saint-rw"], "--loader saint-rw: a heterogeneous graph trains on --loader "
                               "neighbor"),
    (["--model", "pinsage"], "--model pinsage: has no heterogeneous path"),
    (["--activation-checkpointing"], "--activation-checkpointing True: is not available"),
    (["--pca-components", "8"], "--pca-components 8: reduces a homogeneous"),
    (["--feature-store", "mmap"], "--feature-store mmap: a heterogeneous graph is held in RAM"),
    (["--eval-method", "clusters"], "--eval-method clusters: has no heterogeneous path"),
])
def test_settings_a_heterogeneous_graph_cannot_honour(extra, needle):
    cfg = parse_config(HETERO + extra)
    with pytest.raises(SettingError) as info:
        cfg.check_graph_kind(hetero=True)
    assert needle in str(info.value)
    parse_config(HETERO).check_graph_kind(hetero=True)   # the plain hetero settings pass
    cfg.check_graph_kind(hetero=False)                   # and all of these are fine without


def test_a_target_type_needs_a_heterogeneous_graph():
    cfg = parse_config(["--ds_config", "x.json", "--target-type", "paper"])
    with pytest.raises(SettingError, match="--target-type paper: names a node type, but "
                                           "synthetic is homogeneous"):
        cfg.check_graph_kind(hetero=False)
    parse_config(HETERO + ["--target-type", "paper"]).check_graph_kind(hetero=True)
