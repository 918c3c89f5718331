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
