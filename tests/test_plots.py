"""tl.plots: figures built from plain history/metrics data."""

import json
import subprocess
import sys

import pytest

from conftest import REPO
from tl import plots


def epoch(n, phase="head", loss=1.0, accuracy=0.5, val_loss=1.1, val_accuracy=0.4, seconds=2.0):
    return {"epoch": n, "phase": phase, "learning_rate": 1e-3, "loss": loss, "accuracy": accuracy,
            "val_loss": val_loss, "val_accuracy": val_accuracy, "seconds": seconds}


HEAD_ONLY = [epoch(1, loss=0.9, val_loss=1.0, accuracy=0.6, val_accuracy=0.55),
             epoch(2, loss=0.7, val_loss=0.8, accuracy=0.7, val_accuracy=0.65)]
TWO_PHASES = HEAD_ONLY + [epoch(3, "fine_tune", loss=0.5, val_loss=0.6),
                          epoch(4, "fine_tune", loss=0.4, val_loss=None)]


def traces(fig):
    return {trace.name: trace for trace in fig.data}


def annotation_texts(fig):
    return [a.text for a in fig.layout.annotations]


# -- curves ----------------------------------------------------------------------------

@pytest.mark.parametrize("metric, train, val", [("loss", [0.9, 0.7], [1.0, 0.8]),
                                                ("accuracy", [0.6, 0.7], [0.55, 0.65])])
def test_curves_plot_train_and_validation_by_epoch(metric, train, val):
    fig = plots.curves(HEAD_ONLY, metric)
    by_name = traces(fig)
    assert list(by_name) == ["train", "validation"]
    assert list(by_name["train"].x) == [1, 2] and list(by_name["train"].y) == train
    assert list(by_name["validation"].x) == [1, 2] and list(by_name["validation"].y) == val
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text == metric


def test_curves_keep_missing_values_as_gaps():
    fig = plots.curves(TWO_PHASES, "loss")
    assert list(traces(fig)["validation"].y) == [1.0, 0.8, 0.6, None]


def test_curves_mark_each_new_phase_only_in_multi_phase_histories():
    assert not plots.curves(HEAD_ONLY).layout.shapes
    assert not plots.curves(HEAD_ONLY).layout.annotations

    fig = plots.curves(TWO_PHASES)
    assert len(fig.layout.shapes) == 1
    line = fig.layout.shapes[0]
    assert (line.x0, line.x1, line.line.dash) == (2, 2, "dash")
    assert annotation_texts(fig) == ["fine_tune starts"]


def test_curves_draw_live_batches_at_fractional_epochs():
    batches = [{"phase": "head", "epoch": 2, "step": 5, "steps": 10, "loss": 0.8, "accuracy": 0.6},  # stale
               {"phase": "head", "epoch": 3, "step": 1, "steps": 4, "loss": 0.6, "accuracy": 0.7},
               {"phase": "head", "epoch": 3, "step": 3, "steps": 4, "loss": 0.5, "accuracy": 0.75}]
    live = traces(plots.curves(HEAD_ONLY, "loss", batches))["current epoch"]
    assert list(live.x) == [2.25, 2.75] and list(live.y) == [0.6, 0.5]
    assert live.opacity < 1
    assert list(traces(plots.curves(HEAD_ONLY, "accuracy", batches))["current epoch"].y) == [0.7, 0.75]
    assert "current epoch" not in traces(plots.curves(HEAD_ONLY, "loss", batches[:1]))


def test_curves_of_empty_history_say_so():
    fig = plots.curves([])
    assert not fig.data and annotation_texts(fig) == ["No epochs yet"]
    batch = {"phase": "head", "epoch": 1, "step": 1, "steps": 2, "loss": 2.0, "accuracy": 0.1}
    fig = plots.curves([], batches=[batch])
    assert list(traces(fig)["current epoch"].x) == [0.5] and not fig.layout.annotations


def test_curves_reject_unknown_metric():
    with pytest.raises(ValueError):
        plots.curves(HEAD_ONLY, "val_loss")


def fit_step(n, iteration, loss, val_loss, accuracy=0.8, val_accuracy=0.75, seconds=0.5):
    """An entry of an exact head fit: a reported L-BFGS iteration, with a running ``epoch``."""
    return {"epoch": n, "phase": "head", "method": "exact", "learning_rate": None, "iteration": iteration,
            "loss": loss, "accuracy": accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "seconds": seconds}


EXACT = [fit_step(1, 1, 1.2, 1.3), fit_step(2, 2, 0.8, 0.9), fit_step(3, 3, 0.5, 0.6),
         fit_step(4, 5, 0.3, 0.45), fit_step(5, 8, 0.2, 0.4, accuracy=0.95, val_accuracy=0.9)]
THEN_IMAGES = EXACT + [dict(epoch(6, "fine_tune", loss=0.15, val_loss=0.35), method="steps"),
                       dict(epoch(7, "fine_tune", loss=0.1, val_loss=0.3), method="steps")]


def test_curves_of_an_exact_fit_are_against_its_iterations():
    fig = plots.curves(EXACT, "loss")
    by_name = traces(fig)
    assert list(by_name) == ["train", "validation"]
    assert list(by_name["train"].x) == [1, 2, 3, 5, 8]  # the recorded iterations, not the running index
    assert list(by_name["validation"].y) == [1.3, 0.9, 0.6, 0.45, 0.4]
    assert all(trace.mode == "lines+markers" for trace in fig.data)  # sparse points stay visible
    assert fig.layout.xaxis.title.text == "L-BFGS iteration"
    assert fig.layout.title.text.startswith("Loss per L-BFGS iteration") and "fitted exactly" in fig.layout.title.text
    # Old runs recorded no iteration: their position stands in.
    old = [{key: value for key, value in entry.items() if key != "iteration"} for entry in EXACT]
    assert list(traces(plots.curves(old, "accuracy"))["train"].x) == [1, 2, 3, 4, 5]


def test_the_loss_of_an_exact_fit_is_the_objective_it_minimises_and_says_so():
    # A real shape: the cross-entropy rises while the regularised objective falls.
    fit = [dict(fit_step(n, iteration, loss, 0.3), objective=objective)
           for n, (iteration, loss, objective) in enumerate([(1, 0.5, 0.6), (2, 1e-5, 0.02), (3, 0.0017, 0.011),
                                                             (5, 0.001, 0.0105)], 1)]
    by_name = traces(plots.curves(fit, "loss"))
    assert list(by_name) == ["training objective (cross-entropy + L2)", "validation cross-entropy"]
    assert list(by_name["training objective (cross-entropy + L2)"].y) == [0.6, 0.02, 0.011, 0.0105]
    assert list(by_name["validation cross-entropy"].y) == [0.3] * 4
    assert list(traces(plots.curves(fit, "accuracy"))) == ["train", "validation"]  # accuracy is accuracy
    # Fitted before epochs on images: the marker at epoch 0 is the cross-entropy the epochs after report.
    then = fit + [dict(epoch(5, "fine_tune", loss=0.2), method="steps")]
    assert list(traces(plots.curves(then, "loss"))["head fitted exactly (5 iterations)"].y) == [0.001, 0.3]


def test_curves_after_an_exact_head_fit_count_epochs_on_images():
    fig = plots.curves(THEN_IMAGES, "loss")
    by_name = traces(fig)
    assert list(by_name) == ["train", "validation", "head fitted exactly (8 iterations)"]
    assert list(by_name["train"].x) == [1, 2] and list(by_name["train"].y) == [0.15, 0.1]
    fitted = by_name["head fitted exactly (8 iterations)"]
    assert list(fitted.x) == [0, 0] and list(fitted.y) == [0.2, 0.4] and fitted.mode == "markers"
    assert fig.layout.xaxis.title.text == "epoch" and not fig.layout.shapes
    # The epoch in progress on images, counted the same way.
    batch = {"phase": "fine_tune", "epoch": 8, "step": 1, "steps": 2, "loss": 0.1, "accuracy": 0.9}
    assert list(traces(plots.curves(THEN_IMAGES, "loss", [batch]))["current epoch"].x) == [2.5]
    first = dict(batch, epoch=6)  # the first epoch on images, none finished yet
    fig = plots.curves(EXACT, "accuracy", [first])
    assert fig.layout.xaxis.title.text == "epoch" and list(traces(fig)["current epoch"].x) == [0.5]
    assert list(traces(fig)["head fitted exactly (8 iterations)"].y) == [0.95, 0.9]


# -- per-class accuracy and confusion matrix ---------------------------------------------

METRICS = {"class_names": ["cat", "dog", "bird"],
           "confusion_matrix": [[3, 1, 0], [0, 0, 0], [2, 2, 4]],
           "per_class_accuracy": {"cat": 0.75, "dog": None, "bird": 0.5}}


def test_per_class_accuracy_bars_with_missing_class():
    fig = plots.per_class_accuracy(METRICS)
    (bar,) = fig.data
    assert list(bar.y) == ["cat", "dog", "bird"] and list(bar.x) == [0.75, None, 0.5]
    assert list(bar.text) == ["75%", "n/a", "50%"]
    # Labels outside the bars (a 0% class has no bar but still reads "0%"), with room for "100%".
    assert bar.textposition == "outside" and bar.cliponaxis is False
    assert fig.layout.xaxis.range[0] == 0 and fig.layout.xaxis.range[1] > 1


def test_per_class_accuracy_without_classes():
    fig = plots.per_class_accuracy({"class_names": [], "per_class_accuracy": {}})
    assert not fig.data and annotation_texts(fig) == ["No classes"]


def test_confusion_matrix_shows_counts_with_names_on_both_axes():
    heat, cells = plots.confusion_matrix(METRICS).data
    assert [list(row) for row in heat.z] == METRICS["confusion_matrix"]
    assert list(heat.x) == list(heat.y) == METRICS["class_names"]
    assert [list(row) for row in heat.text][2] == ["2", "2", "4"]
    # A click lands on the invisible marker over a cell: it names [true, predicted].
    assert cells.type == "scatter" and cells.marker.opacity == 0 and len(cells.x) == 9
    by_cell = {(x, y): list(c) for x, y, c in zip(cells.x, cells.y, cells.customdata)}
    assert by_cell[("cat", "bird")] == ["bird", "cat"]  # x = predicted, y = true
    assert by_cell[("dog", "cat")] == ["cat", "dog"]


def test_confusion_matrix_normalised_rows_sum_to_one():
    heat, _ = plots.confusion_matrix(METRICS, normalize=True).data
    rows = [list(row) for row in heat.z]
    assert sum(rows[0]) == pytest.approx(1) and sum(rows[2]) == pytest.approx(1)
    assert rows[0] == pytest.approx([0.75, 0.25, 0.0])
    assert rows[1] == [None, None, None]  # no true "dog" images
    assert list(heat.text[2]) == ["0.25", "0.25", "0.50"]


def test_confusion_matrix_without_results():
    fig = plots.confusion_matrix({"class_names": [], "confusion_matrix": []})
    assert not fig.data and annotation_texts(fig) == ["No test results"]


# -- class counts ----------------------------------------------------------------------

def test_class_counts_bars_and_total_in_title():
    fig = plots.class_counts({"cat": 40, "dog": 10, "bird": 25})
    (bar,) = fig.data
    assert list(bar.x) == ["cat", "dog", "bird"] and list(bar.y) == [40, 10, 25]
    assert "75 in total" in fig.layout.title.text and "4.0×" in fig.layout.title.text


def test_class_counts_with_an_empty_class_and_no_classes():
    assert "0 in total" in plots.class_counts({"a": 0, "b": 0}).layout.title.text
    fig = plots.class_counts({})
    assert not fig.data and annotation_texts(fig) == ["No images"]


# -- comparing runs --------------------------------------------------------------------

RUNS = [{"label": "head", "history": HEAD_ONLY},
        {"label": "fine", "history": [epoch(1, val_accuracy=0.5, seconds=3.0),
                                      epoch(2, val_accuracy=None, seconds=1.5),
                                      epoch(3, val_accuracy=0.8, seconds=2.5)]}]


def test_compare_curves_one_line_per_run_by_epoch():
    by_name = traces(plots.compare_curves(RUNS))
    assert list(by_name) == ["head", "fine"]
    assert list(by_name["head"].x) == [1, 2] and list(by_name["head"].y) == [0.55, 0.65]
    assert list(by_name["fine"].y) == [0.5, None, 0.8]


def test_compare_curves_by_cumulative_time():
    fig = plots.compare_curves(RUNS, metric="loss", x="time")
    by_name = traces(fig)
    assert list(by_name["fine"].x) == [3.0, 4.5, 7.0]
    assert list(by_name["head"].x) == [2.0, 4.0] and list(by_name["head"].y) == [0.9, 0.7]
    assert fig.layout.xaxis.title.text == "training time (s)"


def test_compare_curves_keep_exact_fits_off_the_epoch_axis():
    mixed = [{"label": "features", "history": EXACT}, {"label": "fine", "history": THEN_IMAGES},
             {"label": "scratch", "history": HEAD_ONLY}]
    fig = plots.compare_curves(mixed, metric="val_loss")
    by_name = traces(fig)
    assert list(by_name) == ["features: head fitted exactly (8 iterations)", "fine", "scratch"]
    fitted = by_name["features: head fitted exactly (8 iterations)"]
    assert list(fitted.x) == [0] and list(fitted.y) == [0.4] and fitted.mode == "markers"  # its final value
    assert list(by_name["fine"].x) == [0, 1, 2] and list(by_name["fine"].y) == [0.4, 0.35, 0.3]
    assert list(by_name["scratch"].x) == [1, 2]
    assert fig.layout.xaxis.title.text == "epoch" and "epoch 0: heads fitted exactly" in fig.layout.title.text

    # Only exact fits: against their iterations.
    fig = plots.compare_curves([{"label": "features", "history": EXACT},
                                {"label": "earlier", "history": EXACT[:3]}])
    assert fig.layout.xaxis.title.text == "L-BFGS iteration"
    assert fig.layout.title.text.startswith("Validation accuracy by L-BFGS iteration")
    assert list(traces(fig)["features"].x) == [1, 2, 3, 5, 8] and list(traces(fig)["earlier"].x) == [1, 2, 3]

    # Against time, every entry where its seconds put it.
    fig = plots.compare_curves(mixed, metric="val_loss", x="time")
    assert list(traces(fig)["features"].x) == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert list(traces(fig)["fine"].x) == [0.5, 1.0, 1.5, 2.0, 2.5, 4.5, 6.5]
    assert fig.layout.xaxis.title.text == "training time (s)"


def test_compare_curves_empty_and_bad_axis():
    assert annotation_texts(plots.compare_curves([])) == ["No runs"]
    with pytest.raises(ValueError):
        plots.compare_curves(RUNS, x="step")


# -- accuracy against cost -------------------------------------------------------------

ROWS = [{"label": "a", "test_accuracy": 0.70, "train_seconds": 10},
        {"label": "b", "test_accuracy": 0.90, "train_seconds": 50},
        {"label": "c", "test_accuracy": 0.80, "train_seconds": 60},  # dominated by b
        {"label": "d", "test_accuracy": 0.60, "train_seconds": 10},  # same time as a, worse
        {"label": "e", "test_accuracy": 0.90, "train_seconds": 70},  # same accuracy as b, slower
        {"label": "f", "test_accuracy": 0.95, "train_seconds": 100},
        {"label": "g", "test_accuracy": 0.70, "train_seconds": 10},  # identical to a: kept
        {"label": "h", "test_accuracy": None, "train_seconds": 5}]   # not finished: ignored


def test_pareto_front_known_answer_with_ties():
    assert plots.pareto_front(ROWS) == [0, 6, 1, 5]


def test_pareto_front_orders_by_time_and_handles_empty():
    rows = [{"test_accuracy": 0.9, "train_seconds": 30}, {"test_accuracy": 0.5, "train_seconds": 1}]
    assert plots.pareto_front(rows) == [1, 0]
    assert plots.pareto_front([]) == []


def test_accuracy_vs_cost_marks_the_front():
    by_name = traces(plots.accuracy_vs_cost(ROWS))
    runs, front = by_name["runs"], by_name["Pareto front"]
    assert list(runs.text) == list("abcdefg")
    assert list(runs.x) == [10, 50, 60, 10, 70, 100, 10]
    assert list(front.x) == [10, 10, 50, 100] and list(front.y) == [0.7, 0.7, 0.9, 0.95]
    assert "lines" in front.mode and front.marker.symbol != runs.marker.symbol


def test_accuracy_vs_cost_without_finished_runs():
    fig = plots.accuracy_vs_cost([{"label": "x", "test_accuracy": None, "train_seconds": None}])
    assert not fig.data and annotation_texts(fig) == ["No finished runs"]


# -- the module stays light ------------------------------------------------------------

def test_import_pulls_in_neither_tensorflow_nor_streamlit():
    code = ("import json, sys; import tl.plots; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'streamlit'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_compare_per_class_one_bar_series_per_run():
    first = {"class_names": ["cat", "dog"], "per_class_accuracy": {"cat": 0.5, "dog": 1.0}}
    second = {"class_names": ["cat", "dog"], "per_class_accuracy": {"cat": 0.75, "dog": None}}
    by_name = traces(plots.compare_per_class([{"label": "a", "metrics": first}, {"label": "b", "metrics": second}]))
    assert list(by_name) == ["a", "b"]
    assert list(by_name["a"].y) == ["cat", "dog"] and list(by_name["a"].x) == [0.5, 1.0]
    assert list(by_name["b"].x) == [0.75, None] and list(by_name["b"].text) == ["75%", "n/a"]
    assert annotation_texts(plots.compare_per_class([])) == ["No finished runs"]


def test_compare_per_class_shows_every_class_and_prints_zero():
    # Runs on different class sets: the union, in first-seen order; no bar (None) where a
    # run lacks the class, and every value printed beside its bar, 0% included.
    first = {"class_names": ["cat", "dog"], "per_class_accuracy": {"cat": 0.0, "dog": 1.0}}
    second = {"class_names": ["dog", "owl"], "per_class_accuracy": {"dog": 0.5, "owl": None}}
    by_name = traces(plots.compare_per_class([{"label": "a", "metrics": first}, {"label": "b", "metrics": second}]))
    assert list(by_name["a"].y) == ["cat", "dog", "owl"] == list(by_name["b"].y)
    assert list(by_name["a"].x) == [0.0, 1.0, None] and list(by_name["b"].x) == [None, 0.5, None]
    assert list(by_name["a"].text) == ["0%", "100%", "not in this run"]
    assert list(by_name["b"].text) == ["not in this run", "50%", "n/a"]
    assert all(trace.textposition == "outside" and trace.cliponaxis is False for trace in by_name.values())
    fig = plots.compare_per_class([{"label": "a", "metrics": first}])
    assert fig.layout.xaxis.range[1] > 1  # room for "100%" right of a full bar


def test_accuracy_vs_cost_names_every_point():
    by_name = traces(plots.accuracy_vs_cost(ROWS))
    runs = by_name["runs"]
    assert "text" in runs.mode and list(runs.text) == list("abcdefg")
    assert runs.cliponaxis is False and plots.accuracy_vs_cost(ROWS).layout.yaxis.range[1] > 1
    # Two points close together: the second's name goes below it.
    close = [{"label": "x", "test_accuracy": 0.80, "train_seconds": 10.0},
             {"label": "y", "test_accuracy": 0.82, "train_seconds": 10.5},
             {"label": "z", "test_accuracy": 0.30, "train_seconds": 90.0}]
    assert list(traces(plots.accuracy_vs_cost(close))["runs"].textposition) == [
        "top center", "bottom center", "top center"]


# -- reliability ------------------------------------------------------------------------

def bin_row(low, count, confidence, accuracy):
    return {"low": low, "high": round(low + 0.1, 1), "count": count, "confidence": confidence, "accuracy": accuracy}


def test_reliability_chart_draws_before_and_after_over_the_diagonal():
    record = {"temperature": 1.8, "applied": True, "source": "validation",
              # Bins with no photos are left out of the record (0.1-0.5 here); a zero count is skipped too.
              "reliability_before": [bin_row(0.5, 3, 0.55, 0.3), bin_row(0.9, 40, 0.97, 0.8)],
              "reliability_after": [bin_row(0.3, 0, 0.35, 0.0), bin_row(0.6, 10, 0.65, 0.6),
                                    bin_row(0.8, 33, 0.86, 0.85)]}
    by_name = traces(plots.reliability_chart(record))
    assert list(by_name) == ["perfectly calibrated", "before calibration", "after calibration"]
    assert list(by_name["perfectly calibrated"].x) == [0, 1] == list(by_name["perfectly calibrated"].y)
    assert list(by_name["before calibration"].x) == [0.55, 0.97] and list(by_name["before calibration"].y) == [0.3, 0.8]
    assert list(by_name["after calibration"].x) == [0.65, 0.86]  # the empty bin has no point
    assert [row[0] for row in by_name["after calibration"].customdata] == [10, 33]
    sizes = list(by_name["before calibration"].marker.size)
    assert sizes[0] < sizes[1]  # a larger bin, a larger point
    fig = plots.reliability_chart(record)
    assert list(fig.layout.xaxis.range) == [0, 1] and fig.layout.xaxis.tickformat == ".0%"
    json.dumps(fig.to_plotly_json(), default=str)  # serialisable, as st.plotly_chart sends it


def test_reliability_chart_of_an_uncalibrated_run_and_of_no_test_photos():
    rows = [bin_row(0.7, 5, 0.75, 0.6)]
    not_applied = {"temperature": None, "applied": False, "source": "none", "note": "Not calibrated: ...",
                   "reliability_before": rows, "reliability_after": rows}
    assert list(traces(plots.reliability_chart(not_applied))) == ["perfectly calibrated",
                                                                  "the model's own (not calibrated)"]
    empty = {"applied": True, "reliability_before": [], "reliability_after": []}
    assert annotation_texts(plots.reliability_chart(empty)) == ["No test photos"]
    assert annotation_texts(plots.reliability_chart({})) == ["No test photos"]
