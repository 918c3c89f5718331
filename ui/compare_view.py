"""Comparing any finished runs side by side: the one comparison table (its columns, also
the sweep's table in :mod:`ui.sweep_view`), the CSV, the curves, accuracy vs time and per
class, and picking the runs to compare."""

import streamlit as st

from tl import plots, runs
from tl import sweep as sweeps
from tl.strategies import STRATEGIES
from ui.state import PLOTLY_CONFIG


# -- the one table -----------------------------------------------------------------------

# Widths in pixels, so that the table keeps every column on screen in a 1400-pixel window
# (wide layout, sidebar open: about 940 pixels): the run id gets what is left of TABLE_WIDTH,
# and when a run failed the rows grow to wrap its reason (and the id) over four lines.
TABLE_WIDTH = 900
RUN_WIDTH = 140  # the least the run id gets: 20 characters a line
TALL_ROW = 84
ROW, HEADER = 35, 35  # Streamlit's default heights
COLUMN_CONFIG = {
    "strategy": st.column_config.TextColumn("strategy", width=125),
    "status": st.column_config.TextColumn("status", width=75),
    "dataset": st.column_config.TextColumn("dataset", width=100),
    "backbone": st.column_config.TextColumn("backbone", width=120),
    "head": st.column_config.TextColumn("head", width=115),
    "epochs": st.column_config.TextColumn("epochs", width=70, help="Epochs of the image-trained phases, run of "
                                          "at most; or the iterations of an exact fit on cached features."),
    "test_accuracy": st.column_config.NumberColumn("test acc", format="percent", width=70,
                                                   help="Accuracy on the held-out test images."),
    "best_val_accuracy": st.column_config.NumberColumn("best val acc", format="percent", width=85,
                                                       help="The best validation accuracy of any epoch."),
    "seconds": st.column_config.NumberColumn("time (s)", format="%.1f", width=65,
                                             help="Training time, feature extraction included (zero when cached "
                                                  "features were reused)."),
    "trainable_params": st.column_config.NumberColumn("trained params", format="localized", width=100,
                                                      help="How many weights the strategy trains."),
    "reason": st.column_config.TextColumn("why it stopped", width=190,
                                          help="Why a run failed or was cancelled; click a cell to read all of it."),
    "run_id": st.column_config.TextColumn("run", help="The run's id (its folder); click a cell to read all of it."),
}
SWEEP_COLUMNS = ("strategy", "status", "epochs", "test_accuracy", "best_val_accuracy", "seconds",
                 "trainable_params", "reason", "run_id")
PICK_COLUMNS = ("strategy", "dataset", "backbone", "head", "test_accuracy", "best_val_accuracy", "seconds",
                "trainable_params", "run_id")
VARYING = ("dataset", "backbone", "head")  # shown only where the runs differ in them


def show_table(table: list, key: str, columns=SWEEP_COLUMNS) -> None:
    """One comparison table of ``table``'s rows (:func:`tl.sweep.run_row`), with the
    ``columns`` that say something: a column of empty reasons, or a dataset, backbone or
    head all rows share, is left out (a caption names what they share). Every count, size
    and time is in the CSV download."""
    shared = {column: table[0].get(column) for column in VARYING
              if column in columns and table and len({row.get(column) for row in table}) == 1}
    if not any(row.get("reason") for row in table):
        shared["reason"] = None
    shown = [column for column in columns if column not in shared]
    config = {column: COLUMN_CONFIG[column] for column in shown}
    used = sum(COLUMN_CONFIG[column]["width"] for column in shown if column != "run_id")
    config["run_id"] = dict(COLUMN_CONFIG["run_id"], width=max(RUN_WIDTH, TABLE_WIDTH - used))
    tall = "reason" in shown  # a failure's reason wraps in its cell
    rows = [{column: _cell(row, column) for column in shown} for row in table]
    st.dataframe(rows, hide_index=True, key=key, column_order=shown, column_config=config, placeholder="–",
                 row_height=TALL_ROW if tall else None,
                 height=HEADER + len(rows) * (TALL_ROW if tall else ROW) + 3 if len(rows) <= 12 else "auto")
    same = [f"{column} {value}" for column, value in shared.items() if value is not None and len(table) > 1]
    if same:
        st.caption(f"All {len(table)} runs: {', '.join(same)}.")


def _cell(row: dict, column: str):
    if column == "seconds":  # what the accuracy-vs-time chart plots
        if row.get("train_seconds") is None:
            return None
        return (row["train_seconds"] or 0) + (row.get("extract_seconds") or 0)
    return row.get(column)


def epochs_label(cfg, history) -> str:
    """Progress in epochs of the image-trained phases ("12/30"), or the iterations of a head
    fitted exactly on cached features."""
    stepped = sum(1 for entry in history if entry.get("method") != "exact")
    if STRATEGIES[cfg.strategy].uses_features and stepped == 0:
        return f"{history[-1].get('iteration', len(history))} iterations (exact fit)" if history else ""
    return f"{stepped}/{cfg.total_epochs}"


# -- any runs side by side ---------------------------------------------------------------

def comparison(run_list: list, labels: dict, key: str, table: list | None = None) -> list:
    """A CSV download of the table, validation curves against epoch and time, test accuracy
    against training time with the Pareto front, and per-class accuracy, of ``run_list``
    (finished runs). The table itself is shown here unless the caller passes the ``table``
    it showed already (which may hold unfinished runs too: they are in the CSV, not the
    charts). Returns the table's rows (:func:`tl.sweep.rows`)."""
    if table is None:
        table = sweeps.rows(run_list)
        show_table(table, key=f"{key}_table", columns=PICK_COLUMNS)
    st.download_button("Download the table (CSV)", data=sweeps.to_csv(table), file_name="comparison.csv",
                       mime="text/csv", key=f"{key}_csv", on_click="ignore")
    curves = [{"label": labels[run.id], "history": run.history} for run in run_list]
    for x in ("epoch", "time"):
        left, right = st.columns(2)
        left.plotly_chart(plots.compare_curves(curves, "val_accuracy", x), key=f"{key}_val_accuracy_{x}", config=PLOTLY_CONFIG)
        right.plotly_chart(plots.compare_curves(curves, "val_loss", x), key=f"{key}_val_loss_{x}", config=PLOTLY_CONFIG)
    # Feature extraction is part of what those strategies cost (0 when the cache was reused).
    cost = [{"label": labels[row["run_id"]], "test_accuracy": row["test_accuracy"],
             "train_seconds": _cell(row, "seconds")} for row in table if row["run_id"] in labels]
    left, right = st.columns(2)
    left.plotly_chart(plots.accuracy_vs_cost(cost), key=f"{key}_cost", config=PLOTLY_CONFIG)
    left.caption("Training time includes feature extraction (zero when cached features were reused).")
    right.plotly_chart(plots.compare_per_class([{"label": labels[run.id], "metrics": run.metrics}
                                                for run in run_list]), key=f"{key}_per_class",
                       config=PLOTLY_CONFIG)
    return table


def pick_runs(root: str) -> None:
    """Choose any finished runs and compare them; warn when they are not on the same data."""
    rows = {run.id: (run, run.summary()) for run in runs.list_runs(root)}  # damaged runs read as "damaged"
    done = {run_id: pair for run_id, pair in rows.items() if pair[1]["status"] == "done"}
    if not done:
        st.info("No finished runs yet: train some on the Train page, or run a sweep.")
        return
    by_id = {run_id: run for run_id, (run, _) in done.items()}
    names = {run_id: f"{row['strategy']} · {row['dataset']} · {run_id}" for run_id, (_, row) in done.items()}
    chosen = st.multiselect("Finished runs", list(by_id), key="compare_pick", format_func=names.get,
                            placeholder="Choose two or more runs")
    if not chosen:
        st.caption("Choose the runs to put side by side.")
        return
    picked = [by_id[run_id] for run_id in chosen]
    warning = mixed_data_warning(picked)
    if warning:
        st.warning(warning, icon=":material/warning:")
    comparison(picked, chart_labels(picked), key="pick")


def chart_labels(run_list: list) -> dict:
    """Short names for the charts' legends and points: the strategy, with the end of the
    run id (as in the table's run column) where two runs share a strategy."""
    strategies = {run.id: run.summary()["strategy"] for run in run_list}
    counts = {}
    for strategy in strategies.values():
        counts[strategy] = counts.get(strategy, 0) + 1
    labels = {run_id: strategy if counts[strategy] == 1 else f"{strategy} · {run_id[-4:]}"
              for run_id, strategy in strategies.items()}
    if len(set(labels.values())) < len(labels):  # the ends of two ids agree: the whole ids
        labels = {run_id: f"{strategy} · {run_id}" for run_id, strategy in strategies.items()}
    return labels


def mixed_data_warning(run_list: list) -> str | None:
    """The sentence saying that the runs were not trained on the same data (different
    datasets or data folders, or different classes), or ``None`` when they were."""
    datasets = {}
    classes = {}
    for run in run_list:
        cfg = run.config
        name = cfg.dataset + (f" ({cfg.data_dir})" if cfg.data_dir else "")
        datasets.setdefault(name, []).append(run.id)
        classes.setdefault(tuple(run.metrics.get("class_names") or ()), []).append(run.id)
    if len(datasets) > 1:
        which = "; ".join(f"{name}: {len(ids)} run{'s' if len(ids) > 1 else ''}" for name, ids in datasets.items())
        return (f"These runs are on different datasets ({which}), so their accuracies are not comparable; "
                "the per-class chart lists every dataset's classes, a run has no bar for a class it does not have.")
    if len(classes) > 1:
        return ("These runs have different classes (the same dataset read with other settings or another "
                "folder content), so their accuracies are not comparable; the per-class chart lists every run's "
                "classes, a run has no bar for a class it does not have.")
    return None
