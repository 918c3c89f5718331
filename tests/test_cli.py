import argparse
import json
import os
import re
import subprocess
import sys

import pytest

from tl import cli, runs
from tl.cli.compare import _COMPARE_FLAGS
from tl.cli.runs import registries
from tl.cli.train import config_from_args, format_event
from tl.config import CLASS_WEIGHTS, FIELD_HELP, OPTIMIZER_DESCRIPTIONS, STRATEGY_DEFAULTS

from conftest import REPO, TINY, write_image_folder


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tl", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600, check=False)


def tiny_flags():
    flags = []
    for name, value in TINY.items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def test_list_json_names_every_registry():
    result = run_cli("list", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "resnet50" in found["backbones"] and "fine_tune" in found["strategies"]
    assert set(found) == {"datasets", "backbones", "heads", "strategies", "optimizers"}
    assert found == {kind: list(entries) for kind, entries in registries().items()}


@pytest.mark.slow
def test_train_json_on_two_mirrored_cpu_devices_then_runs(runs_dir):
    result = run_cli("train", *tiny_flags(), "--strategy", "fine_tune", "--runs-dir", str(runs_dir),
                     "--json", env={"TL_CPU_REPLICAS": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["run_dir"] == str(runs_dir / summary["run_id"])
    assert "Phase 'head': fitting the head exactly" in result.stderr
    assert re.search(r"Epoch \d+ \(fine_tune\)", result.stderr)
    run = runs.get(summary["run_id"], runs_dir)
    device = next(e for e in run.events()[0] if e["type"] == "device")
    assert device["kind"] == "cpu-mirrored" and device["replicas"] == 2

    listed = run_cli("runs", "--runs-dir", str(runs_dir), "--json")
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows] == [summary["run_id"]] and rows[0]["status"] == "done"
    table = run_cli("runs", "--runs-dir", str(runs_dir))
    assert summary["run_id"] in table.stdout and "done" in table.stdout


@pytest.mark.parametrize("flags, message", [
    (["--backbone", "resnet18"], "Expected `backbone` to be one of"),
    (["--strategy", "finetune"], "Received: strategy='finetune'"),
    (["--image-size", "0"], "Expected `image_size` to be at least 8"),
    (["--dataset", "folder", "--data-dir", "/no/such/folder"], "Data folder '/no/such/folder' does not exist"),
    (["--dataset", "folder", "--data-dir", "{one_class}"], "has only one class ('cats')"),
    (["--dataset", "folder", "--data-dir", "{empty_class}"], "Class folder 'dogs' has no images"),
])
def test_bad_configs_fail_with_one_sentence_and_leave_no_run_folder(tmp_path, runs_dir, flags, message):
    one = write_image_folder(tmp_path / "one", {"cats": 3})
    empty = write_image_folder(tmp_path / "empty", {"cats": 3, "dogs": 0})
    flags = [f.format(one_class=one, empty_class=empty) for f in flags]
    result = run_cli("train", *tiny_flags(), *flags, "--runs-dir", str(runs_dir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert list(runs_dir.iterdir()) == []


def test_config_file_with_flag_overrides(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({**TINY, "epochs": 3, "name": "from file"}))
    args = cli._parser().parse_args(["train", "--config", str(path), "--epochs", "4", "--augment",
                                     "--tag", "a", "--tag", "b"])
    cfg = config_from_args(args)
    assert (cfg.epochs, cfg.name, cfg.augment, cfg.tags) == (4, "from file", True, ("a", "b"))
    assert cfg.backbone == "small_cnn"


def test_worker_trains_a_queued_run_in_process(runs_dir):
    from conftest import tiny_config

    run = runs.create(tiny_config(), runs_dir)
    assert cli.main(["worker", run.id, "--runs-dir", str(runs_dir)]) == 0
    assert run.status()["status"] == "done"
    assert cli.main(["worker", "nope", "--runs-dir", str(runs_dir)]) == 2


def test_format_event_covers_every_event_type():
    samples = [
        {"type": "device", "kind": "gpu", "gpus": ["H100"], "replicas": 1, "train_precision": "mixed_float16"},
        {"type": "data", "classes": 2, "images": 10, "train": 6, "val": 2, "test": 2},
        {"type": "phase", "phase": "head", "epochs": 1, "learning_rate": 0.001, "trainable_params": 10},
        {"type": "features", "cache": "hit", "images": 10},
        {"type": "batch", "epoch": 1, "step": 1, "steps": 2, "loss": 0.5, "accuracy": None},
        {"type": "epoch", "epoch": 1, "phase": "head", "loss": 0.5, "accuracy": 0.5, "val_loss": 0.4,
         "val_accuracy": 0.6, "seconds": 1.0},
        {"type": "status", "status": "done", "test_accuracy": 0.9},
        {"type": "log", "message": "hello"},
        {"type": "cluster", "role": "worker", "task": "worker:1", "workers": 2, "chief_run_id": "r1"},
    ]
    lines = [format_event(e) for e in samples]
    assert all(lines)
    assert lines[0] == "Device: gpu (H100), 1 replica(s), training in mixed_float16"
    assert lines[-1] == "Cluster: worker (worker:1) of 2 workers, training run r1 (the chief writes it)"


def subcommand(name):
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_flag_of_train_and_compare_explains_itself_with_its_choices_and_default(command):
    found = registries()
    fixed = {"dataset": found["datasets"], "backbone": found["backbones"], "head": found["heads"],
             "strategy": found["strategies"], "optimizer": found["optimizers"], "class_weight": CLASS_WEIGHTS}
    flags = [a for a in subcommand(command)._actions if not isinstance(a, argparse._HelpAction)]
    assert {a.dest for a in flags} >= set(_COMPARE_FLAGS)
    for action in flags:
        text = action.help
        assert text and text[0].isupper() and text.endswith("."), (action.dest, text)
        if action.dest not in FIELD_HELP:
            continue
        assert text.startswith(FIELD_HELP[action.dest]), action.dest
        assert "Default" in text, action.dest
        for name in fixed.get(action.dest, ()):
            assert name in text, (action.dest, name)
        if action.dest in STRATEGY_DEFAULTS:
            assert "Default per strategy: feature_extraction " in text
            assert all(name in text for name in found["strategies"])


def test_train_help_prints_explanations_choices_and_defaults():
    result = run_cli("train", "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    text = " ".join(result.stdout.split())  # undo argparse's wrapping
    assert "--optimizer OPTIMIZER The algorithm that updates the weights. One of: adam, sgd, rmsprop" in text
    assert "One of: none, balanced. Default: none." in text
    assert "Default per strategy: feature_extraction 200, earlier_layer 200, frozen 5" in text
    assert FIELD_HELP["seed"] + " Default: 0." in text


@pytest.mark.parametrize("command", ["train", "runs", "list", "predict", "export", "download", "compare", "check",
                                     "data", "data add"])
def test_every_commands_help_is_plain_text(command, capsys):
    """A '%' in a help text once made argparse print its own internals (an object address)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command.split(), "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "usage:" in out
    assert "option_strings" not in out and " object at 0x" not in out and ".;" not in out, out


def test_worker_is_hidden_from_help_but_still_runs(runs_dir):
    result = run_cli("--help", env={"COLUMNS": "200"})
    assert result.returncode == 0 and "train" in result.stdout
    assert "worker" not in result.stdout and "worker" not in cli._parser().format_usage()
    missing = run_cli("worker", "no-such-run", "--runs-dir", str(runs_dir))
    assert missing.returncode == 2
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: There is no run 'no-such-run'"), missing.stderr


def test_list_describes_every_optimizer_and_list_json_keeps_names():
    assert all(registries()["optimizers"].values())
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name, description in OPTIMIZER_DESCRIPTIONS.items():
        assert re.search(rf"^  {name} +{re.escape(description)}$", result.stdout, re.MULTILINE), name
    assert json.loads(run_cli("list", "--json").stdout)["optimizers"] == ["adam", "sgd", "rmsprop"]


def test_no_registry_description_shows_a_zero_padded_seed_or_is_empty():
    for kind, entries in registries().items():
        for name, description in entries.items():
            assert description.strip(), (kind, name)
            assert not re.search(r"seed[- _]?0\d", description, re.IGNORECASE), (kind, name, description)


def test_runs_into_a_reader_that_has_gone_stops_quietly(runs_dir):
    from conftest import tiny_config

    for i in range(2):
        runs.create(tiny_config(), runs_dir, run_id=f"run-{i}")
    process = subprocess.Popen([sys.executable, "-m", "tl", "runs", "--runs-dir", str(runs_dir)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # like `| head -1` having read its line and exited
    errors = process.stderr.read()
    assert process.wait(timeout=600) == 0
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors


@pytest.mark.parametrize("args, message", [
    (["runs", "--runs-dir", "{file}", "--json"], "is a file, not a folder"),
    (["train", "--backbone", "nope", "--json"], "Expected `backbone` to be one of"),
])
def test_json_errors_are_one_json_object_on_stdout(tmp_path, args, message):
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    result = run_cli(*[a.format(file=file) for a in args])
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    error = json.loads(lines[0])
    assert list(error) == ["error"] and message in error["error"]
    assert result.stderr.strip() == f"error: {error['error']}"


def test_an_unknown_command_lists_only_the_public_ones(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["nonsense"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("python -m tl: error: unknown command 'nonsense'; choose from train, runs, predict, list, "
                   "compare, download, export, data, check, suggest")
    assert "worker" not in err


def test_verbose_is_one_flag_for_the_whole_cli_before_or_after_the_command():
    parser = cli._parser()
    assert parser.parse_args(["list"]).verbose is False
    assert parser.parse_args(["--verbose", "list"]).verbose is True
    assert parser.parse_args(["list", "--verbose"]).verbose is True
    assert parser.parse_args(["data", "list", "--verbose"]).verbose is True


def test_typed_epochs_from_a_flag_or_a_config_file_drop_the_step_floor_unless_min_steps_is_typed(tmp_path):
    parser = cli._parser()
    scratch = ["train", "--strategy", "scratch", "--weights", "none"]

    def min_steps(*flags):
        return config_from_args(parser.parse_args([*scratch, *flags])).resolved().min_steps

    assert min_steps() == 300 and min_steps("--epochs", "2") == 0
    assert min_steps("--epochs", "2", "--min-steps", "50") == 50
    written = tmp_path / "config.json"  # a file written by hand, or before typed epochs were kept
    written.write_text(json.dumps({"strategy": "scratch", "weights": "none", "epochs": 2}))
    assert min_steps("--config", str(written)) == 0 and min_steps("--config", str(written), "--min-steps", "9") == 9
