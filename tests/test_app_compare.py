"""The Compare page: a two-strategy sweep through the job manager, and picking runs."""

import csv
import io
import json
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from tl import run_cost, runs
from tl import sweep as sweeps
from tl.config import RunConfig
from tl.files import atomic_write_json, read_json
from tl.strategies import weights_warning

from conftest import REPO, tiny_config

APP = str(REPO / "streamlit_app.py")
WAIT_SECONDS = 240



def open_compare(**query):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.query_params.update(query)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return " ".join(element.value for element in elements)


def fake_run(root, status="done", reason=None, classes=("cat", "dog"), per_class=None, **changes):
    """A run folder as training leaves it (config, status, history, metrics), without training."""
    run = runs.create(tiny_config(**changes), root)
    if status == "done":
        per_class = per_class or dict.fromkeys(classes, 0.5)
        atomic_write_json(run.path / "history.json", [{"epoch": 1, "phase": "scratch", "loss": 0.7, "accuracy": 0.5,
                                                       "val_loss": 0.7, "val_accuracy": 0.5, "seconds": 1.0}])
        atomic_write_json(run.path / "labels.json", {"class_names": list(classes)})
        atomic_write_json(run.path / "metrics.json", {
            "test_accuracy": sum(per_class.values()) / len(per_class), "best_val_accuracy": 0.5,
            "train_seconds": 2.0, "extract_seconds": 0.5, "trainable_params": 10, "total_params": 20,
            "images_per_second": 100.0, "epochs_run": 1, "class_names": list(classes),
            "per_class_accuracy": per_class})
    run.set_status(status, **({"reason": reason} if reason else {}))
    return run


def chart_specs(at) -> str:
    return " ".join(str(chart.proto.spec) for chart in at.get("plotly_chart"))


@pytest.mark.slow
def test_a_two_strategy_sweep_from_the_page(runs_root, downloads):
    at = open_compare()
    at.selectbox(key="compare_backbone").set_value("small_cnn").run()
    at.number_input(key="compare_image_size").set_value(16)
    at.number_input(key="compare_samples_per_class").set_value(8)
    at.number_input(key="compare_epochs").set_value(1)
    at.number_input(key="compare_batch_size").set_value(64)
    at.number_input(key="compare_synthetic_classes").set_value(2)
    # small_cnn has no pretrained weights: only scratch is chosen, the others say why not.
    at.run()
    assert at.multiselect(key="compare_strategies").value == ["scratch"]
    warning = weights_warning("feature_extraction", "small_cnn", "none")
    assert f"Not chosen by default (add them above to compare anyway): {warning} The same holds for earlier_layer, " \
        in texts(at.caption)
    at.multiselect(key="compare_strategies").set_value(["scratch", "feature_extraction"]).run()
    assert not at.exception, at.exception
    assert warning in texts(at.warning)  # chosen anyway: the reason stays in view
    at.button(key="compare_start").click().run()
    assert not at.exception, at.exception

    sweep = sweeps.list_sweeps(runs_root)[0]
    assert at.query_params["sweep"] == sweep.id  # a reload finds it
    assert at.subheader[0].value == f"Sweep {sweep.id}"
    advice = at.info[0].value
    assert "**scratch**" in advice and "Transfer is not possible: small_cnn has no pretrained weights" in advice
    assert "ImageNet features already" not in advice
    deadline = time.time() + WAIT_SECONDS
    while sweep.active() and time.time() < deadline:
        time.sleep(0.5)
    assert sweep.statuses() == {"scratch": "done", "feature_extraction": "done"}

    at.run()
    assert not at.exception, at.exception
    found = {run.config.strategy: run for run in sweep.runs()}
    assert len(at.dataframe) == 1  # one table: status, progress and results together
    table = at.dataframe[0].value
    assert "best_val_accuracy" in table.columns and "reason" not in table.columns  # no run failed
    assert sorted(table["run_id"]) == sorted(run.id for run in found.values())
    assert sorted(table["strategy"]) == ["feature_extraction", "scratch"]
    assert len(at.get("plotly_chart")) == 6  # 4 curves, accuracy vs time, per class
    specs = chart_specs(at)
    assert specs.count('"name":"scratch"') >= 5 and specs.count('"name":"feature_extraction"') >= 3
    # Its head was fitted exactly: off the epoch axis, one marker with its iterations.
    iterations = found["feature_extraction"].history[-1]["iteration"]
    assert specs.count(f'"name":"feature_extraction: head fitted exactly ({iterations} iterations)"') == 2
    assert any("The advisor's choice, scratch" in m.value for m in [*at.success, *at.warning])

    rows = list(csv.DictReader(io.StringIO(downloads["comparison.csv"].decode())))
    assert len(rows) == 2
    for row in rows:
        metrics = json.loads((found[row["strategy"]].path / "metrics.json").read_text())
        for column in sweeps.METRIC_COLUMNS:
            stored = metrics[column]
            assert (row[column] == "") if stored is None else float(row[column]) == stored, column

    # The same runs, picked by hand.
    at.radio(key="compare_mode").set_value("Pick finished runs").run()
    at.multiselect(key="compare_pick").set_value([found["scratch"].id, found["feature_extraction"].id]).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["strategy"].tolist() == ["scratch", "feature_extraction"]
    assert len(at.get("plotly_chart")) == 6
    assert not at.warning  # the same data


def test_pick_runs_without_any_says_what_to_do(runs_root):
    at = open_compare()
    at.radio(key="compare_mode").set_value("Pick finished runs").run()
    assert not at.exception
    assert at.info[0].value == "No finished runs yet: train some on the Train page, or run a sweep."


@pytest.mark.slow
def test_the_sweep_shows_its_estimate_and_what_the_budget_refuses_before_the_click(runs_root, monkeypatch,
                                                                                   fresh_server):
    monkeypatch.setenv(run_cost.BUDGET_ENV, "2500")
    at = open_compare()
    # The defaults: every strategy on EfficientNet-Lite0 at 224 px, 400 synthetic images.
    strategies = at.multiselect(key="compare_strategies").value
    each = {cfg.strategy: run_cost.estimate(cfg, 400) for cfg in sweeps.sweep_configs(RunConfig(), strategies, "t")}
    total = sum(run.seconds for run in each.values())
    assert total >= 120 and each["scratch"].seconds >= 120  # in minutes, then
    peak = max(run.memory_mb for run in each.values())
    estimated = [c.value for c in at.caption if c.value.startswith("Estimated")]
    assert estimated == [f"Estimated ~{total / 60:.0f} min in all (scratch ~{each['scratch'].seconds / 60:.0f} min "
                         f"of it), peak memory ~{peak:,.0f} MB (scratch) on a CPU: 6 runs one after another, "
                         "400 images each. Budget: 2,500 MB."]
    over = [name for name, run in each.items() if run.memory_mb > 2500]
    assert "scratch" in over
    needs = ", ".join(f"{name} ~{each[name].memory_mb:,.0f} MB" for name in over)
    assert texts(at.warning) == (f"Over the memory budget of 2,500 MB (TL_MEMORY_BUDGET_MB): {needs}. Untick them "
                                 "or lower the image size or batch size: Run comparison queues nothing until every "
                                 "run fits.")
    at.button(key="compare_start").click().run()
    assert not at.exception, at.exception
    assert at.error[0].value.startswith(f"Nothing was queued: the {over[0]} run would not fit (untick it, or change "
                                        "the settings). This run needs about")
    assert sweeps.list_sweeps(runs_root) == [] and runs.list_runs(runs_root) == []

    # The light strategies fit; the slower of them is named.
    at.multiselect(key="compare_strategies").set_value(["feature_extraction", "frozen"]).run()
    assert not at.warning
    estimated = [c.value for c in at.caption if c.value.startswith("Estimated")]
    light = {name: each[name] for name in ("feature_extraction", "frozen")}
    assert estimated == [f"Estimated ~{sum(r.seconds for r in light.values()):.0f} s in all (frozen "
                         f"~{light['frozen'].seconds:.0f} s of it), peak memory "
                         f"~{max(r.memory_mb for r in light.values()):,.0f} MB "
                         f"({max(light, key=lambda name: light[name].memory_mb)}) on a CPU: 2 runs one after "
                         "another, 400 images each. Budget: 2,500 MB."]


def test_every_choice_fits_a_phone_and_the_chosen_one_is_described(runs_root):
    from tl.backbones import BACKBONES
    from tl.datasets import DATASETS
    from tl.heads import HEADS

    at = open_compare()
    described = {"compare_dataset": DATASETS, "compare_backbone": BACKBONES, "compare_head": HEADS}
    boxes = {box.key: box for box in at.selectbox}
    assert set(described) | {"compare_weights"} <= set(boxes)
    for box in boxes.values():
        assert all(len(option) <= 40 for option in box.options), (box.key, box.options)
    for key, registry in described.items():
        assert boxes[key].options == list(registry)
        assert registry[boxes[key].value].description in [c.value for c in at.caption], key
        assert all(f"- **{name}**: {entry.description}" in boxes[key].help for name, entry in registry.items())
    at.selectbox(key="compare_head").set_value("flatten_dense").run()
    assert HEADS["flatten_dense"].description in [c.value for c in at.caption]


def test_stop_a_sweep_from_its_progress_view(runs_root):
    at = open_compare()
    at.selectbox(key="compare_backbone").set_value("small_cnn").run()
    at.number_input(key="compare_image_size").set_value(16)
    at.number_input(key="compare_epochs").set_value(300)
    at.multiselect(key="compare_strategies").set_value(["scratch", "frozen"]).run()
    at.button(key="compare_start").click().run()
    assert not at.exception, at.exception
    sweep = sweeps.list_sweeps(runs_root)[0]
    assert at.get("progress")[0].proto.text == "0 of 2 runs finished"
    at.button(key="sweep_stop").click().run()
    # As written: a killed worker reads as failed until the job manager records the cancel.
    def written():
        return {read_json(run.path / "status.json")["status"] for run in sweep.runs()}

    deadline = time.time() + 60
    while written() != {"cancelled"} and time.time() < deadline:
        time.sleep(0.2)
    assert sweep.statuses() == {"scratch": "cancelled", "frozen": "cancelled"}
    at.run()
    assert not at.exception, at.exception
    assert not at.get("progress")  # the sweep is over: no live view
    assert at.dataframe[0].value["status"].tolist() == ["cancelled", "cancelled"]


def test_the_compare_page_does_not_import_tensorflow(runs_root):
    # Both modes render (and the similarity measurement waits for "Run comparison") without Keras.
    code = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
            "at.switch_page('app_pages/compare.py').run()\n"
            "at.selectbox(key='compare_backbone').set_value('resnet50').run()\n"
            "at.radio(key='compare_mode').set_value('Pick finished runs').run()\n"
            "assert not at.exception, at.exception\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'openvino'))\n"
            "print(loaded[:5]); sys.exit(1 if loaded else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_strategies_whose_weights_cannot_be_had_are_not_offered(runs_root, monkeypatch):
    monkeypatch.setattr(sweeps, "can_download", lambda host=sweeps.WEIGHTS_HOST: False)  # offline
    at = open_compare()
    at.selectbox(key="compare_backbone").set_value("resnet50").run()
    assert not at.exception, at.exception
    strategies = at.multiselect(key="compare_strategies")
    assert strategies.options == ["scratch"] and strategies.value == ["scratch"]
    message = texts(at.warning)
    assert "The ImageNet weights for resnet50 are not in " in message and "cannot be downloaded now" in message
    assert "Not offered until then: feature_extraction, earlier_layer, frozen, fine_tune, full_fine_tune." in message

    # Online, every strategy is offered and, the choice untouched, chosen.
    monkeypatch.setattr(sweeps, "can_download", lambda host=sweeps.WEIGHTS_HOST: True)
    at.run()
    strategies = at.multiselect(key="compare_strategies")
    assert strategies.options == list(sweeps.STRATEGIES) and strategies.value == list(sweeps.STRATEGIES)
    assert not at.warning
    # Random weights: nothing to transfer, so only scratch is chosen, and the caption says why.
    at.selectbox(key="compare_weights").set_value("none").run()
    assert at.multiselect(key="compare_strategies").value == ["scratch"]
    assert weights_warning("feature_extraction", "resnet50", "none") in texts(at.caption)


def test_the_sweep_table_says_why_runs_failed(runs_root):
    sweep = sweeps.create(tiny_config(), ["scratch", "frozen", "fine_tune"], runs_root)
    why = "Could not download the ImageNet weights for resnet50: there seems to be no internet connection."
    sweep.add_run("scratch", fake_run(runs_root, "failed", reason=why, strategy="scratch").id)
    stopped = fake_run(runs_root, "cancelled", reason="The sweep was stopped before this run started.",
                       strategy="frozen")
    sweep.add_run("frozen", stopped.id)
    at = open_compare(sweep=sweep.id)
    assert at.subheader[0].value == f"Sweep {sweep.id}"
    assert len(at.dataframe) == 1
    table = at.dataframe[0].value
    assert table["status"].tolist() == ["failed", "cancelled", "not started"]
    assert table["reason"].tolist()[:2] == [why, "The sweep was stopped before this run started."]
    assert table["reason"].isna().tolist() == [False, False, True]


def test_an_unknown_sweep_in_the_link_says_so(runs_root):
    at = open_compare(sweep="20990101-000000-nope")
    assert f"No sweep '20990101-000000-nope' in {sweeps.sweeps_root(runs_root)};" in texts(at.warning)
    assert not at.subheader  # and no sweep view


def test_the_table_fits_a_1400_pixel_window(runs_root):
    # Wide layout, sidebar open: about 940 pixels for the table. Every column has a set
    # width (no column sized to a long run id or reason), and together they fit.
    sweep = sweeps.create(tiny_config(), ["scratch", "frozen"], runs_root)
    sweep.add_run("scratch", fake_run(runs_root, strategy="scratch").id)
    sweep.add_run("frozen", fake_run(runs_root, "failed", reason="x " * 200, strategy="frozen").id)
    at = open_compare(sweep=sweep.id)
    assert len(at.dataframe) == 1
    frame = at.dataframe[0]
    config = json.loads(frame.proto.columns)
    shown = list(frame.proto.column_order)
    assert shown == list(frame.value.columns) and "reason" in shown and "head" not in shown
    widths = [config[column]["width"] for column in shown]
    assert all(isinstance(width, int) for width in widths) and sum(widths) <= 920, widths
    assert frame.proto.row_height > 64  # a long reason wraps instead of running off


def test_picked_runs_on_different_data_warn_and_chart_every_class(runs_root):
    first = fake_run(runs_root, strategy="scratch", classes=("circle", "square"),
                     per_class={"circle": 0.0, "square": 1.0})
    second = fake_run(runs_root, strategy="frozen", dataset="cifar10", classes=("airplane", "circle"))
    at = open_compare()
    at.radio(key="compare_mode").set_value("Pick finished runs").run()
    at.multiselect(key="compare_pick").set_value([first.id, second.id]).run()
    assert not at.exception, at.exception
    message = texts(at.warning)
    assert "These runs are on different datasets (synthetic: 1 run; cifar10: 1 run)" in message
    assert len(at.dataframe) == 1 and at.dataframe[0].value["dataset"].tolist() == ["synthetic", "cifar10"]
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    per_class = next(f for f in figures if f["layout"]["title"]["text"] == "Test accuracy per class, by run")
    bars = {trace["name"]: trace for trace in per_class["data"]}
    assert bars["scratch"]["y"] == ["circle", "square", "airplane"] == bars["frozen"]["y"]
    assert bars["scratch"]["x"] == [0.0, 1.0, None] and bars["frozen"]["x"] == [0.5, None, 0.5]
    assert bars["scratch"]["text"][0] == "0%" and bars["frozen"]["text"][1] == "not in this run"
    cost = next(f for f in figures if f["layout"]["title"]["text"] == "Test accuracy vs training time")
    points = next(trace for trace in cost["data"] if trace["name"] == "runs")
    assert "text" in points["mode"] and sorted(points["text"]) == ["frozen", "scratch"]


def test_the_sweep_form_follows_the_sweep_in_the_url(runs_root):
    base = tiny_config(image_size=24, samples_per_class=12, batch_size=32)
    sweep = sweeps.create(base, ["scratch", "frozen"], runs_root)
    at = open_compare(sweep=sweep.id)
    assert not at.exception, at.exception
    assert at.selectbox(key="compare_backbone").value == "small_cnn"
    assert at.selectbox(key="compare_weights").value == "none"
    assert at.number_input(key="compare_image_size").value == 24
    assert at.number_input(key="compare_samples_per_class").value == 12
    assert at.multiselect(key="compare_strategies").value == ["scratch", "frozen"]
    # An edit stays (the sweep on screen did not change).
    at.number_input(key="compare_image_size").set_value(32).run()
    assert at.number_input(key="compare_image_size").value == 32
