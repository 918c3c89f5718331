"""Plotly figures for runs, built from plain data (history.json, metrics.json, events).

Every function takes lists/dicts as they are stored in a run folder and returns a
``plotly.graph_objects.Figure``; nothing here reads files, imports streamlit or Keras.
"""

import bisect
import math

import plotly.graph_objects as go

HEIGHT = 380
LABELS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "validation loss",
          "val_accuracy": "validation accuracy"}
# An exact fit's loss traces: the training one is the objective it minimises (see _fit_curves).
FIT_LOSS_NAMES = ("training objective (cross-entropy + L2)", "validation cross-entropy")


def _figure(title: str, height: int = HEIGHT, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=height, margin=dict(t=60, b=50, l=60, r=20), **layout)
    return fig


def _empty(title: str, message: str) -> go.Figure:
    """A figure with no data and ``message`` in the middle."""
    fig = _figure(title, xaxis=dict(visible=False), yaxis=dict(visible=False))
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=16))
    return fig


def _per_row_height(count: int) -> int:
    return max(HEIGHT, 24 * count + 120)


def _exact(entry: dict) -> bool:
    """Whether a history entry is a reported iteration of an exact head fit (L-BFGS on
    cached features) rather than an epoch of gradient steps."""
    return entry.get("method") == "exact"


def _iterations(fit: list) -> list:
    """The L-BFGS iteration of each entry of an exact fit (its position where a run
    recorded none)."""
    return [entry.get("iteration") or n for n, entry in enumerate(fit, 1)]


def _on_images(history: list):
    """A function from a history entry's running ``epoch`` to its epoch of training on
    images: an exact fit's entries take running numbers too, but are not epochs."""
    fitted = sorted(entry["epoch"] for entry in history if _exact(entry))
    return lambda epoch: epoch - bisect.bisect_left(fitted, epoch)


def _fitted_text(fit: list) -> str:
    return f"head fitted exactly ({_iterations(fit)[-1]} iterations)"


def curves(history: list, metric: str = "loss", batches: list | None = None) -> go.Figure:
    """Train and validation ``metric`` ("loss" or "accuracy") against epoch.

    A dashed line marks where each new phase starts (at the end of the previous phase's
    last epoch). ``batches`` (batch events of the epoch in progress) add a fainter
    "current epoch" trace at fractional epochs ``epoch - 1 + step / steps``; batches of
    epochs already in ``history`` are ignored.

    A head fitted exactly (entries with ``method: "exact"``) has iterations, not epochs: a
    history of only that fit is drawn against its L-BFGS iterations (its training loss as
    the objective the fit minimises, see :func:`_fit_curves`); before epochs on
    images, the fit's final values are one "head fitted exactly" marker at epoch 0 (its
    cross-entropy, as the epochs after it report) and the epochs on images count from 1.
    """
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', not {metric!r}")
    fit = [h for h in history if _exact(h)]
    stepped = [h for h in history if not _exact(h)]
    done = max((h["epoch"] for h in history), default=0)
    live = [b for b in batches or () if b.get("steps") and b["epoch"] > done]
    if fit and not stepped and not live:
        return _fit_curves(fit, metric)
    title = f"{metric.capitalize()} per epoch"
    if not history and not live:
        return _empty(title, "No epochs yet")
    fig = _figure(title, xaxis_title="epoch", yaxis_title=metric, hovermode="x unified")
    on_images = _on_images(history)
    epochs = [on_images(h["epoch"]) for h in stepped]
    fig.add_scatter(x=epochs, y=[h.get(metric) for h in stepped], name="train", mode="lines+markers")
    fig.add_scatter(x=epochs, y=[h.get(f"val_{metric}") for h in stepped], name="validation",
                    mode="lines+markers")
    if fit:
        fig.add_scatter(x=[0, 0], y=[fit[-1].get(metric), fit[-1].get(f"val_{metric}")], name=_fitted_text(fit),
                        mode="markers", marker={"symbol": "diamond", "size": 11}, text=["train", "validation"],
                        hovertemplate="%{text}: %{y:.3f}<extra>head fitted exactly</extra>")
    if live:
        fig.add_scatter(x=[on_images(b["epoch"]) - 1 + b["step"] / b["steps"] for b in live],
                        y=[b.get(metric) for b in live], name="current epoch", mode="lines",
                        opacity=0.45, line=dict(dash="dot"))
    for before, after in zip(stepped, stepped[1:]):
        if after["phase"] != before["phase"]:
            fig.add_vline(x=on_images(after["epoch"]) - 1, line_dash="dash", line_color="gray",
                          annotation_text=f"{after['phase']} starts", annotation_position="top left")
    last = max(epochs + [on_images(b["epoch"]) for b in live], default=0)
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(last / 10)), rangemode="tozero")
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def _fit_curves(fit: list, metric: str) -> go.Figure:
    """Train and validation ``metric`` of an exact head fit against its L-BFGS iterations
    (only some are recorded: markers on the lines).

    The training loss drawn is what the fit minimises, the ``objective`` (cross-entropy plus
    the L2 penalty), which never rises from one iteration to the next; the cross-entropy
    alone can, as the penalty trades it for smaller weights, and read as a fit going wrong.
    The traces say which is which. Runs recorded without ``objective`` draw their
    cross-entropy as "train", as before."""
    title = f"{metric.capitalize()} per L-BFGS iteration<br><sub>the head fitted exactly on cached features</sub>"
    fig = _figure(title, xaxis_title="L-BFGS iteration", yaxis_title=metric, hovermode="x unified")
    iterations = _iterations(fit)
    objective = metric == "loss" and all(h.get("objective") is not None for h in fit)
    train, validation = FIT_LOSS_NAMES if objective else ("train", "validation")
    fig.add_scatter(x=iterations, y=[h.get("objective" if objective else metric) for h in fit], name=train,
                    mode="lines+markers")
    fig.add_scatter(x=iterations, y=[h.get(f"val_{metric}") for h in fit], name=validation, mode="lines+markers")
    fig.update_xaxes(rangemode="tozero")
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02])
    return fig


def per_class_accuracy(metrics: dict) -> go.Figure:
    """Horizontal bars of test accuracy per class; classes with no test images (None)
    have no bar and read "n/a"."""
    per_class = metrics.get("per_class_accuracy") or {}
    names = [n for n in metrics.get("class_names") or per_class if n in per_class]
    title = "Test accuracy per class"
    if not names:
        return _empty(title, "No classes")
    values = [per_class[n] for n in names]
    fig = _figure(title, _per_row_height(len(names)), xaxis_title="accuracy", yaxis_title="class")
    # Labels outside the bars, so a 0% class (no bar at all) still reads "0%".
    fig.add_bar(x=values, y=names, orientation="h", name="accuracy",
                text=["n/a" if v is None else f"{v:.0%}" for v in values], textposition="outside",
                cliponaxis=False, hovertemplate="%{y}: %{text}<extra></extra>")
    fig.update_xaxes(range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1])
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def confusion_matrix(metrics: dict, normalize: bool = False) -> go.Figure:
    """Heatmap of the test confusion matrix: rows (y) true class, columns (x) predicted.

    With ``normalize``, each row is divided by its total (a row with no images is None).
    Each cell's ``customdata`` is ``[true, predicted]`` so a click maps back to names.
    """
    names = list(metrics.get("class_names") or [])
    counts = metrics.get("confusion_matrix") or []
    title = "Confusion matrix" + (" (row-normalised)" if normalize else "")
    if not names or not counts:
        return _empty(title, "No test results")
    if normalize:
        z = [[c / sum(row) if sum(row) else None for c in row] for row in counts]
        text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    else:
        z = [list(row) for row in counts]
        text = [[str(c) for c in row] for row in counts]
    fig = _figure(title, _per_row_height(len(names)), xaxis_title="predicted", yaxis_title="true")
    fig.add_heatmap(z=z, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues",
                    hoverinfo="skip")
    # A heatmap cannot be selected by a click; an invisible square marker over each cell can,
    # and carries [true, predicted] so the click maps back to the class names.
    cells = [(t, p, text[i][j]) for i, t in enumerate(names) for j, p in enumerate(names)]
    side = max(8, min(60, int(360 / max(len(names), 1))))
    fig.add_scatter(x=[c[1] for c in cells], y=[c[0] for c in cells], mode="markers", name="cells",
                    marker={"symbol": "square", "size": side, "opacity": 0.0, "color": "#2f6fde"},
                    customdata=[[c[0], c[1]] for c in cells], text=[c[2] for c in cells], showlegend=False,
                    hovertemplate="true: %{y}<br>predicted: %{x}<br>%{text}<br>click to see these images"
                                  "<extra></extra>")
    fig.update_layout(clickmode="event+select", dragmode=False)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def class_counts(counts: dict) -> go.Figure:
    """Bars of images per class; the title gives the total and the largest/smallest ratio."""
    total = sum(counts.values())
    if not counts:
        return _empty("Images per class", "No images")
    # Short lines: a plotly title does not wrap, and a narrow column would cut it off.
    title = f"Images per class ({total:,} in total)"
    smallest, largest = min(counts.values()), max(counts.values())
    if smallest:
        title += f"<br><sub>largest/smallest {largest / smallest:.1f}×</sub>"
    fig = _figure(title, xaxis_title="class", yaxis_title="images")
    fig.add_bar(x=list(counts), y=list(counts.values()), name="images", text=list(counts.values()),
                textposition="auto")
    fig.update_xaxes(type="category")
    return fig


# Each x of compare_curves: its title's words and its axis title.
COMPARE_AXES = {"epoch": ("by epoch", "epoch"), "time": ("by time", "training time (s)"),
                "iteration": ("by L-BFGS iteration", "L-BFGS iteration")}


def compare_curves(runs: list, metric: str = "val_accuracy", x: str = "epoch") -> go.Figure:
    """One line of ``metric`` per run (``{"label", "history"}``) against epoch, or against
    training time (cumulative history ``seconds``) with ``x="time"``.

    A head fitted exactly has iterations, not epochs. Against epoch, when every run is only
    such a fit, the lines are drawn against L-BFGS iteration instead; otherwise a run that
    is only a fit is one marker at epoch 0 (its final value; the legend gives its
    iterations), and a run whose head was fitted exactly before its epochs on images starts
    its line there, at the fit's final value."""
    if x not in ("epoch", "time"):
        raise ValueError(f"x must be 'epoch' or 'time', not {x!r}")
    label = LABELS.get(metric, metric)
    if not runs:
        return _empty(f"{label.capitalize()} by {x}", "No runs")
    only_fit = [bool(run["history"]) and all(_exact(h) for h in run["history"]) for run in runs]
    axis = "iteration" if x == "epoch" and all(only_fit) else x
    words, axis_title = COMPARE_AXES[axis]
    title = f"{label.capitalize()} {words}"
    if axis == "iteration":
        title += "<br><sub>heads fitted exactly on cached features</sub>"
    elif axis == "epoch" and any(_exact(h) for run in runs for h in run["history"]):
        title += "<br><sub>epoch 0: heads fitted exactly on cached features</sub>"
    fig = _figure(title, xaxis_title=axis_title, yaxis_title=label)
    for run, fit in zip(runs, only_fit):
        xs, ys = _series(run["history"], metric, axis)
        if axis == "epoch" and fit:
            fig.add_scatter(x=xs, y=ys, name=f"{run['label']}: {_fitted_text(run['history'])}", mode="markers",
                            marker={"symbol": "diamond", "size": 11})
        else:
            fig.add_scatter(x=xs, y=ys, name=run["label"], mode="lines+markers")
    if "accuracy" in metric:
        fig.update_yaxes(range=[0, 1.02])
    # Run labels are long: legend below the plot, so the lines keep the figure's width.
    fig.update_layout(height=HEIGHT + 22 * len(runs),
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0})
    return fig


def _series(history: list, metric: str, x: str) -> tuple:
    """``(xs, ys)`` of one run's ``metric`` against ``x``: "time" (cumulative seconds),
    "iteration" (an exact fit's L-BFGS iterations) or "epoch" (epochs on images, after an
    exact head fit's final value at 0)."""
    if x == "time":
        xs, elapsed = [], 0.0
        for h in history:
            elapsed += h.get("seconds") or 0.0
            xs.append(round(elapsed, 3))
        return xs, [h.get(metric) for h in history]
    if x == "iteration":
        return _iterations(history), [h.get(metric) for h in history]
    fit = [h for h in history if _exact(h)]
    stepped = [h for h in history if not _exact(h)]
    on_images = _on_images(history)
    start = [(0, fit[-1].get(metric))] if fit else []
    points = start + [(on_images(h["epoch"]), h.get(metric)) for h in stepped]
    return [p[0] for p in points], [p[1] for p in points]


def _valid(row: dict) -> bool:
    return row.get("test_accuracy") is not None and row.get("train_seconds") is not None


def pareto_front(rows: list) -> list:
    """Indices of the rows no other row dominates (as fast or faster *and* as accurate or
    more, strictly better in one), sorted by training time. Rows missing either value are
    left out; identical rows are all kept."""
    points = {i: (r["train_seconds"], r["test_accuracy"]) for i, r in enumerate(rows) if _valid(r)}

    def dominated(t, a):
        return any(u <= t and b >= a and (u, b) != (t, a) for u, b in points.values())

    front = [i for i, (t, a) in points.items() if not dominated(t, a)]
    return sorted(front, key=lambda i: (points[i][0], i))


def accuracy_vs_cost(rows: list) -> go.Figure:
    """Test accuracy (y) against training seconds (x), one point per row
    (``{"label", "test_accuracy", "train_seconds"}``), each named by its label, with the
    Pareto front joined up."""
    title = "Test accuracy vs training time"
    valid = [r for r in rows if _valid(r)]
    if not valid:
        return _empty(title, "No finished runs")
    fig = _figure(title, xaxis_title="training time (s)", yaxis_title="test accuracy")
    hover = "%{text}<br>%{x:.1f} s<br>accuracy %{y:.1%}<extra></extra>"
    front = [rows[i] for i in pareto_front(rows)]
    fig.add_scatter(x=[r["train_seconds"] for r in front], y=[r["test_accuracy"] for r in front],
                    text=[r["label"] for r in front], name="Pareto front", mode="lines+markers",
                    marker={"symbol": "star", "size": 14}, line={"dash": "dash"}, hovertemplate=hover)
    # Drawn last, so each point's name sits on top of the front's line.
    fig.add_scatter(x=[r["train_seconds"] for r in valid], y=[r["test_accuracy"] for r in valid],
                    text=[r["label"] for r in valid], name="runs", mode="markers+text",
                    textposition=_label_positions(valid), cliponaxis=False,
                    marker={"size": 9}, hovertemplate=hover)
    # Room above 100% for the names of the best runs.
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    return fig


def _label_positions(rows: list) -> list:
    """Where each point's name goes: above it, or below when an earlier point whose name
    is above sits close by (within 6 points of accuracy and a tenth of the time axis), so
    two close points' names do not print over each other."""
    seconds = [r["train_seconds"] for r in rows]
    span = (max(seconds) - min(seconds)) or 1.0
    positions = []
    for row in rows:
        crowded = any(position == "top center" and abs(other["test_accuracy"] - row["test_accuracy"]) < 0.06
                      and abs(other["train_seconds"] - row["train_seconds"]) < span / 10
                      for other, position in zip(rows, positions))
        positions.append("bottom center" if crowded else "top center")
    return positions


def top_k(labels: list, scores: list, title: str, seconds: float | None = None) -> go.Figure:
    """Horizontal bars of a head's top-k probabilities, the most likely class on top."""
    if not labels:
        return _empty(title, "No prediction")
    subtitle = f" ({seconds * 1000:.0f} ms)" if seconds is not None else ""
    fig = _figure(title + subtitle, height=max(220, 34 * len(labels) + 110),
                  xaxis=dict(range=[0, 1], title="probability", tickformat=".0%"))
    fig.add_bar(x=list(scores)[::-1], y=[str(label) for label in labels][::-1], orientation="h",
                text=[f"{s:.1%}" for s in scores][::-1], textposition="auto",
                hovertemplate="%{y}: %{x:.2%}<extra></extra>")
    fig.update_yaxes(automargin=True)
    return fig


def compare_per_class(runs: list) -> go.Figure:
    """Test accuracy per class across runs (``{"label", "metrics"}``): one group of
    horizontal bars per class, one colour per run. The classes are every run's, in the
    order they first appear, so runs on different class sets can be shown together: a
    class a run does not have, or has no test images for, has no bar (its text says which).
    Every value is printed beside its bar, so 0% reads "0%" where no bar can be seen."""
    title = "Test accuracy per class, by run"
    names = []
    for run in runs:
        for name in run["metrics"].get("class_names") or []:
            if name not in names:
                names.append(name)
    if not runs or not names:
        return _empty(title, "No finished runs")
    fig = _figure(title, _per_row_height(len(names) * len(runs)),
                  xaxis_title="accuracy", yaxis_title="class", barmode="group")
    for run in runs:
        own = set(run["metrics"].get("class_names") or [])
        per_class = run["metrics"].get("per_class_accuracy") or {}
        values = [per_class.get(name) if name in own else None for name in names]
        text = [f"{v:.0%}" if v is not None else "n/a" if name in own else "not in this run"
                for name, v in zip(names, values)]
        fig.add_bar(x=values, y=names, orientation="h", name=run["label"], text=text, textposition="outside",
                    cliponaxis=False, hovertemplate=f"{run['label']}<br>%{{y}}: %{{text}}<extra></extra>")
    # Room right of 100% for the printed values.
    fig.update_xaxes(range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


GL_FROM = 5000
# Classes in colours that neither look alike side by side nor clash with the marks below
# (plotly's D3 set without its orange and red).
CLASS_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARKS = (("suspect", "x-thin-open", "crimson", "likely mislabeled"), ("outlier", "diamond-open", "darkorange", "outlier"),
         ("duplicate", "square-open", "black", "near-duplicate"))


def check_map(images: list, class_names: list, title: str = "Map of the images (PCA of the backbone's features)",
              explained: list | None = None, colour_by: str = "given") -> go.Figure:
    """Each image as a point of a check's 2-D map (:class:`tl.check.CheckResult` ``images``:
    ``x``, ``y``, ``label``, ``file`` and the flags), coloured by its given class; suspects,
    outliers and near-duplicates drawn with their own marker on top. ``customdata`` holds
    each point's index into ``images``, so a click can open that image."""
    axes = [f"PC{n + 1}" + (f" ({explained[n]:.0%} of the variance)" if explained and len(explained) > n else "")
            for n in range(2)]
    fig = _figure(title, height=460, xaxis_title=axes[0], yaxis_title=axes[1],
                  legend=dict(orientation="h", y=-0.25))
    # SVG up to a few thousand points (WebGL is missing in some browsers, headless ones
    # included); WebGL beyond, where SVG would crawl.
    scatter = go.Scatter if len(images) <= GL_FROM else go.Scattergl
    for n, name in enumerate(class_names):
        rows = [i for i, image in enumerate(images) if image["label"] == name]
        fig.add_trace(scatter(
            x=[images[i]["x"] for i in rows], y=[images[i]["y"] for i in rows], mode="markers", name=name,
            customdata=rows, text=[images[i]["file"] for i in rows],
            marker=dict(size=7, opacity=0.75, color=CLASS_COLOURS[n % len(CLASS_COLOURS)]),
            hovertemplate="%{text}<br>" + colour_by + ": " + name + "<extra></extra>"))
    for flag, symbol, colour, label in MARKS:
        rows = [i for i, image in enumerate(images) if image.get(flag)]
        if not rows:
            continue
        fig.add_trace(scatter(
            x=[images[i]["x"] for i in rows], y=[images[i]["y"] for i in rows], mode="markers", name=label,
            customdata=rows, text=[f"{images[i]['file']}<br>given: {images[i]['label']}, likely: "
                                   f"{images[i].get('likely')}" for i in rows],
            marker=dict(symbol=symbol, size=14, color=colour, line=dict(width=2, color=colour)),
            hovertemplate="%{text}<br>" + label + "<extra></extra>"))
    return fig


def reliability_chart(calibration: dict) -> go.Figure:
    """Accuracy against confidence per bin of the test photos, before and after calibration
    (``metrics.json``'s ``calibration``: ``reliability_before`` / ``reliability_after``, rows of
    ``low``, ``high``, ``count``, ``confidence``, ``accuracy``), over the diagonal a perfectly
    calibrated model would follow. Empty bins have no point; a point's size grows with its
    bin's count. A run that was not calibrated (``applied`` false) has one line, its own."""
    title = "Reliability on the test photos<br><sub>accuracy per confidence bin; the diagonal is perfect</sub>"
    lines = [("before calibration", calibration.get("reliability_before"), "#7f7f7f"),
             ("after calibration", calibration.get("reliability_after"), "#1f77b4")]
    if not calibration.get("applied"):
        lines = [("the model's own (not calibrated)", lines[0][1] or lines[1][1], "#7f7f7f")]
    lines = [(name, [row for row in rows or [] if row.get("count")], colour) for name, rows, colour in lines]
    if not any(rows for _, rows, _ in lines):
        return _empty(title, "No test photos")
    fig = _figure(title, xaxis_title="confidence (top probability)", yaxis_title="accuracy",
                  legend=dict(orientation="h", y=-0.25))
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", hoverinfo="skip",
                    line=dict(dash="dash", color="black", width=1))
    largest = max(row["count"] for _, rows, _ in lines for row in rows)
    for name, rows, colour in lines:
        if not rows:
            continue
        fig.add_scatter(
            x=[row["confidence"] for row in rows], y=[row["accuracy"] for row in rows], mode="lines+markers",
            name=name, line=dict(color=colour), cliponaxis=False,  # a point at 100% is drawn whole
            marker=dict(color=colour, size=[6 + 12 * math.sqrt(row["count"] / largest) for row in rows]),
            customdata=[[row["count"], row["low"], row["high"]] for row in rows],
            hovertemplate=name + "<br>confidence %{customdata[1]:.0%}-%{customdata[2]:.0%}: mean %{x:.1%}"
                          "<br>accuracy %{y:.1%} of %{customdata[0]} photos<extra></extra>")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig
