"""Smaller models measured before download (tl/variants.py, ui/variants_view.py)."""

import pytest

from tl import export, runs, variants

from conftest import tiny_config, wait_for
from test_app_export import open_run
from ui.variants_view import LABELS


def row(variant, accuracy, size, worst=0.0):
    return {"variant": variant, "bytes": size, "accuracy": accuracy, "agreement": 1.0, "worst_drop": worst,
            "max_diff": 0.0, "ms": 1.0}


def test_the_smallest_variant_within_two_points_is_recommended_and_bigger_drops_are_said():
    rows = [row("keras", 0.90, 100), row("float32", 0.90, 95), row("float16", 0.90, 48),
            row("dynamic", 0.885, 25), row("int8", 0.70, 26, worst=0.5)]
    recommended, said = variants.recommend(rows)
    assert recommended == "dynamic"  # 1.5 points lost: within 2
    assert said == ["int8 loses 20.0 points of test accuracy (90.0% -> 70.0%); one class loses 50.0."]
    recommended, said = variants.recommend([row("keras", 0.9, 100), row("float32", 0.5, 95)])
    assert recommended == "float32" and len(said) == 1  # nothing is within: the float model, warned


def test_a_run_still_training_cannot_be_measured(tmp_path):
    queued = runs.create(tiny_config(), tmp_path)
    with pytest.raises(export.ExportError, match=f"Run '{queued.id}' is queued; only a finished run"):
        variants.start(queued)
    assert variants.find(queued) is None


@pytest.mark.slow
def test_measured_in_the_background_from_the_exports_section(tmp_path, monkeypatch, trained_once):
    """The button starts a process; the page follows it; the table, any warning and the
    recommendation are shown once it is done, and again in another session."""
    root = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    run = trained_once(tiny_config(), root)
    at = open_run(run.id)
    at.button(key=f"variants_start_{run.id}").click().run()
    assert not at.exception, at.exception
    job = variants.find(run)
    assert job is not None
    wait_for(lambda: job.status()["status"] not in variants.ACTIVE, "the measurement to end", timeout=300)
    assert job.status()["status"] == "done", job.status()
    result = job.result()
    assert [r["variant"] for r in result["rows"]] == ["keras", "float32", "float16", "dynamic", "int8"]
    assert result["rows"][1]["agreement"] == 1.0 and result["rows"][1]["max_diff"] < 1e-3
    assert result["rows"][2]["bytes"] < 0.6 * result["rows"][1]["bytes"]  # float16: about half
    assert result["recommended"] in {"float32", "float16", "dynamic", "int8"}

    again = open_run(run.id)  # another session: the table, no measuring again
    table = next(frame.value for frame in again.dataframe if "top-1 agreement" in frame.value.columns)
    assert list(table["model"]) == ["Keras (.keras)", "TFLite float32", "TFLite float16",
                                    "TFLite 8-bit weights (dynamic)", "TFLite int8 (full integer)"]
    assert any(s.value.startswith(f"Recommended: {LABELS[result['recommended']]}") for s in again.success)
    assert len(again.warning) >= len(result["warnings"])
    assert again.button(key=f"variants_start_{run.id}").label == "Measure again"
