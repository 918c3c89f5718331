"""The memory guard: estimates, refusal with a suggestion that fits, and where it applies."""

import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from tl import cli, run_cost, runs, training
from tl.config import RunConfig

from conftest import REPO, tiny_config

CLOUD_MB = 2500
HEAVY = dict(backbone="resnet50", strategy="fine_tune", image_size=224, batch_size=64)


def test_heavy_fine_tune_is_refused_with_a_suggestion_that_fits():
    cfg = RunConfig(**HEAVY)
    images = run_cost.images_hint(cfg)
    with pytest.raises(run_cost.BudgetError) as caught:
        run_cost.check(cfg, images, budget=CLOUD_MB)
    message = str(caught.value)
    needed = run_cost.estimate(cfg, images).memory_mb
    assert needed > CLOUD_MB
    assert message.startswith(f"This run needs about {needed:,.0f} MB of memory but the budget is 2,500 MB")
    changes, smaller = run_cost.suggest(cfg, images, CLOUD_MB)
    assert changes and "try " + ", ".join(f"{k}={v}" for k, v in changes.items()) in message
    suggested = cfg.replace(**changes)
    assert run_cost.check(suggested, images, budget=CLOUD_MB).memory_mb == smaller.memory_mb <= CLOUD_MB


def test_the_default_config_fits_the_cloud_budget():
    cfg = RunConfig()
    found = run_cost.check(cfg, run_cost.images_hint(cfg), budget=CLOUD_MB)
    assert found.memory_mb <= CLOUD_MB
    assert found.describe().startswith("Estimated peak memory ~")


def test_estimates_grow_with_the_work():
    cfg = RunConfig(backbone="resnet50", strategy="fine_tune")
    base = run_cost.estimate(cfg, 400)
    assert run_cost.estimate(cfg.replace(batch_size=64), 400).memory_mb > base.memory_mb
    assert run_cost.estimate(cfg.replace(image_size=320), 400).memory_mb > base.memory_mb
    assert run_cost.estimate(cfg.replace(strategy="feature_extraction"), 400).memory_mb < base.memory_mb
    assert run_cost.estimate(cfg, 4000).seconds > base.seconds


def test_a_sweep_adds_up_its_times_and_peaks_at_its_largest_run():
    from tl import sweep as sweeps

    base = RunConfig(backbone="mobilenet_v2")
    configs = sweeps.sweep_configs(base, sweeps.strategies_for(base.backbone), "test")
    found = run_cost.estimate_sweep(configs, 400)
    each = {cfg.strategy: run_cost.estimate(cfg, 400) for cfg in configs}
    assert found.each == each and list(found.each) == list(sweeps.strategies_for(base.backbone))
    assert found.seconds == pytest.approx(sum(run.seconds for run in each.values()))  # one after another
    assert found.memory_mb == max(run.memory_mb for run in each.values())  # one at a time
    # From random weights scratch trains longest; full_fine_tune also keeps cached features.
    assert (found.slowest, found.largest) == ("scratch", "full_fine_tune")
    assert each["scratch"].seconds > each["full_fine_tune"].seconds
    assert each["full_fine_tune"].memory_mb > each["scratch"].memory_mb
    one = run_cost.estimate_sweep(configs[:1], 400)
    assert one == (each["feature_extraction"].seconds, each["feature_extraction"].memory_mb,
                   "feature_extraction", "feature_extraction", {"feature_extraction": each["feature_extraction"]})
    with pytest.raises(ValueError, match="at least one config"):
        run_cost.estimate_sweep([], 400)


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(run_cost.BUDGET_ENV, raising=False)
    assert run_cost.budget_mb() is None
    run_cost.check(RunConfig(**HEAVY), 400)  # no budget: no refusal
    monkeypatch.setenv(run_cost.BUDGET_ENV, "0")
    assert run_cost.budget_mb() is None
    monkeypatch.setenv(run_cost.BUDGET_ENV, "lots")
    with pytest.raises(run_cost.BudgetError, match="must be a number of megabytes"):
        run_cost.budget_mb()


def test_prepare_and_the_cli_refuse_before_any_run_folder(runs_dir, monkeypatch, capsys):
    monkeypatch.setenv(run_cost.BUDGET_ENV, str(CLOUD_MB))
    heavy = tiny_config(**HEAVY)
    with pytest.raises(run_cost.BudgetError):
        training.prepare(heavy, runs_dir)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**heavy.to_dict()}.items()
             if k in ("dataset", "backbone", "weights", "strategy", "image_size", "batch_size", "samples_per_class")]
    assert cli.main(["train", *flags, "--runs-dir", str(runs_dir)]) == 2
    assert "error: This run needs about" in capsys.readouterr().err
    assert runs.list_runs(runs_dir) == [] and not any(runs_dir.iterdir())


@pytest.mark.slow
def test_train_page_shows_the_estimate_and_the_refusal(tmp_path, monkeypatch, fresh_server):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv(run_cost.BUDGET_ENV, str(CLOUD_MB))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption if c.value.startswith("Estimated peak memory")]
    expected = run_cost.estimate(RunConfig(), run_cost.images_hint(RunConfig())).describe()
    assert captions == [f"{expected} (400 images). Budget: 2,500 MB."]
    at.selectbox(key="train_backbone").set_value("resnet50").run()
    at.selectbox(key="train_strategy").set_value("fine_tune").run()
    at.number_input(key="train_batch_size").set_value(64).run()
    assert any("too much" in c.value for c in at.caption)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert at.error[0].value.startswith("This run needs about")
    assert runs.list_runs(tmp_path / "runs") == []


def test_budget_imports_without_tensorflow():
    code = "import sys, tl.run_cost; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_openvino_pass_is_counted_where_features_are_extracted(monkeypatch):
    monkeypatch.delenv("TL_ENGINE", raising=False)
    cfg = RunConfig()  # feature extraction: one frozen pass over every image
    assert run_cost.estimate(cfg, 400).parts["engine"] == run_cost.ENGINE_MB
    assert run_cost.estimate(cfg.replace(engine="tensorflow"), 400).parts["engine"] == 0
    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    assert run_cost.estimate(cfg, 400).parts["engine"] == 0
    monkeypatch.delenv("TL_ENGINE")
    scratch = RunConfig(backbone="small_cnn", weights="none", strategy="scratch", image_size=32)
    assert run_cost.estimate(scratch, 400).parts["engine"] == 0  # no frozen pass at all


def test_cached_photos_are_not_counted_as_extracted_again():
    cfg = RunConfig(strategy="feature_extraction", backbone="efficientnet_lite0")
    fresh, update = run_cost.estimate(cfg, 610), run_cost.estimate(cfg, 610, cached=600)
    assert update.seconds < fresh.seconds and update.memory_mb == fresh.memory_mb
    # 600 of 610 cached: the pass over the photos is 10/610 of the fresh one's.
    base = run_cost.estimate(cfg, 610, cached=610).seconds
    assert update.seconds - base == pytest.approx((fresh.seconds - base) * 10 / 610)
    tuned = RunConfig(strategy="full_fine_tune", backbone="efficientnet_lite0")  # its head phase reads the cache
    assert run_cost.estimate(tuned, 610, cached=600).seconds < run_cost.estimate(tuned, 610).seconds
    scratch = RunConfig(strategy="scratch", backbone="efficientnet_lite0", weights="none")  # images only
    assert run_cost.estimate(scratch, 610, cached=600).seconds == run_cost.estimate(scratch, 610).seconds
