"""The Compare page: a two-strategy sweep through the job manager, and picking runs."""

import csv
import io
import json
import subprocess
import sys
import time

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from tl import sweep as sweeps
from tl.files import read_json

from conftest import REPO

APP = str(REPO / "streamlit_app.py")
WAIT_SECONDS = 240


@pytest.fixture
def downloads(monkeypatch):
    """The bytes each download button was given, by file name."""
    saved = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        saved[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return saved


def open_compare():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    return at


def chart_specs(at) -> str:
    return " ".join(str(chart.proto.spec) for chart in at.get("plotly_chart"))


def test_a_two_strategy_sweep_from_the_page(runs_root, downloads):
    at = open_compare()
    at.selectbox(key="compare_backbone").set_value("small_cnn").run()
    at.number_input(key="compare_image_size").set_value(16)
    at.number_input(key="compare_samples_per_class").set_value(8)
    at.number_input(key="compare_epochs").set_value(1)
    at.number_input(key="compare_batch_size").set_value(64)
    at.number_input(key="compare_synthetic_classes").set_value(2)
    at.multiselect(key="compare_strategies").set_value(["scratch", "feature_extraction"]).run()
    assert not at.exception, at.exception
    at.button(key="compare_start").click().run()
    assert not at.exception, at.exception

    sweep = sweeps.list_sweeps(runs_root)[0]
    assert at.query_params["sweep"] == sweep.id  # a reload finds it
    assert at.subheader[0].value == f"Sweep {sweep.id}"
    assert "**feature_extraction**" in at.info[0].value  # 8 per class, similarity assumed
    deadline = time.time() + WAIT_SECONDS
    while sweep.active() and time.time() < deadline:
        time.sleep(0.5)
    assert sweep.statuses() == {"scratch": "done", "feature_extraction": "done"}

    at.run()
    assert not at.exception, at.exception
    found = {run.config.strategy: run for run in sweep.runs()}
    table = next(frame.value for frame in at.dataframe if "best_val_accuracy" in frame.value.columns)
    assert sorted(table["run_id"]) == sorted(run.id for run in found.values())
    assert sorted(table["strategy"]) == ["feature_extraction", "scratch"]
    assert len(at.get("plotly_chart")) == 6  # 4 curves, accuracy vs time, per class
    specs = chart_specs(at)
    assert specs.count('"name":"scratch"') >= 5 and specs.count('"name":"feature_extraction"') >= 5
    assert any("The advisor's choice, feature_extraction" in m.value for m in [*at.success, *at.warning])

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


def test_pick_runs_without_any_says_what_to_do(runs_root):
    at = open_compare()
    at.radio(key="compare_mode").set_value("Pick finished runs").run()
    assert not at.exception
    assert at.info[0].value == "No finished runs yet: train some on the Train page, or run a sweep."


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
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "print(loaded[:5]); sys.exit(1 if loaded else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
