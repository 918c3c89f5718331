"""The bench scripts' own logic (their figures are measured by running them, not here)."""

import importlib.util

from conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduce_seeds_configs_are_valid_and_offline_says_why(tmp_path, capsys, monkeypatch):
    seeds = load("reproduce_seeds")
    for quick in (False, True):
        found = seeds.configs(quick)
        assert set(found) == {e.name for e in seeds.EXPERIMENTS}
    full = seeds.configs(False)
    assert full["cifar10_fine_tune_224"].image_size == 224 and full["cifar10_fine_tune_224"].samples_per_class == 0
    assert full["groceries_fine_tune"].fine_tune_layers == 11
    # Offline: the download fails with one sentence and the table says "not run".
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert seeds.main(["--quick", "--only", "groceries_perceptron", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "not run: Could not download Freiburg Groceries" in out
    assert "groceries_perceptron" in out.splitlines()[-3]


def test_load_bench_finds_worker_gaps_and_judges_its_targets():
    bench = load("load")
    # (time, server MB, workers MB, workers alive, generator MB): a worker at 1-2.5 s and from 5.5 s
    samples = [(t / 2, 900, 0, int(2 <= t < 6 or t >= 11), 100) for t in range(0, 20)]
    gaps = bench.worker_gaps(samples, 0.0, 10.0)
    assert gaps == {"samples": 20, "with_worker": 13, "longest_gap_s": 2.5, "first_worker_after_s": 1.0,
                    "longest_sample_step_s": 0.5}
    report = {"actions": {"classify": {"p95_s": 1.2}, "grad-cam on": {"p95_s": 4.9}}, "errors": {"count": 0},
              "memory": {"together_peak_mb": 2400, "difference_mb": 40}, "training": gaps}
    verdicts = {c["what"].split(" (")[0]: c["passed"] for c in bench.checks(report, 2500)}
    assert verdicts == {"no session errors": True, "warm Classify p95 < 3 s": True, "Grad-CAM on p95 <= 5 s": True,
                        "peak server + workers RSS < 2,500 MB": True,
                        "server RSS after close + TTL + 30 s within 150 MB of after the first Classify": True,
                        "a training worker alive all along": False}  # the 2.5 s gap
    report["actions"]["grad-cam on"]["p95_s"] = 5.1
    assert not next(c for c in bench.checks(report, 2500) if c["what"].startswith("Grad-CAM"))["passed"]
    report["memory"]["together_peak_mb"] = 2504
    assert not next(c for c in bench.checks(report, 2500) if c["what"].startswith("peak"))["passed"]
    assert bench.percentile([5, 1, 4, 2, 3], 95) == 5 and bench.percentile([5, 1, 4, 2, 3], 50) == 3


def test_load_bench_reads_each_handover_from_the_run_folders(tmp_path):
    import json

    bench = load("load")
    for run_id, started, finished in (("b", 110.0, 150.0), ("a", 100.0, 108.5), ("c", 152.0, None)):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "status.json").write_text(json.dumps({"started": started, "finished": finished}))
    (tmp_path / "d").mkdir()  # a run that never wrote its status: left out
    assert bench.handovers(tmp_path, ["a", "b", "c", "d"]) == [1.5, 2.0]  # a -> b, b -> c (still running)


def test_active_learning_curves_share_their_start_and_keep_the_test_set_apart():
    import numpy as np

    active = load("active")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 6)) + 3 * np.eye(6)[y]
    test, start, pool = active.split(y, seed=1, test_per_class=10)
    assert len(test) == 30 and len(start) == 3 * active.START_PER_CLASS and len(pool) == 120 - 30 - 15
    assert not (set(test) & set(start)) and not (set(test) & set(pool)) and not (set(start) & set(pool))
    ranked = active.curve(x, y, 3, seed=1, rounds=2, test_per_class=10, method="ranked")
    random = active.curve(x, y, 3, seed=1, rounds=2, test_per_class=10, method="random")
    assert len(ranked) == len(random) == 3 and ranked[0] == random[0]
