"""The Compare page's pieces: the sweep form, the sweep's live progress, and the
side-by-side views of any set of runs (table, curves, accuracy vs time, per class, CSV)."""

import streamlit as st

from tl import plots, runs
from tl import sweep as sweeps
from tl.backbones import BACKBONES
from tl.config import RunConfig
from tl.datasets import DATASETS
from tl.errors import UserError
from tl.heads import HEADS
from tl.strategies import STRATEGIES
from ui.state import data_key, load_data, remember

LIVE_SECONDS = 1.0
DEFAULTS = RunConfig()


# -- the sweep form ----------------------------------------------------------------------

def sweep_form():
    """Render the sweep's choices; return ``(base config, strategies)``, or ``None`` after
    showing why they cannot run."""
    col1, col2, col3 = st.columns(3)
    dataset = col1.selectbox("Dataset", list(DATASETS), key="compare_dataset",
                             format_func=lambda name: f"{name}: {DATASETS[name].description}")
    data_dir = None
    if DATASETS[dataset].needs_dir:
        data_dir = col1.text_input("Data folder on the server", key="compare_data_dir",
                                   placeholder="/path/to/photos", help="One sub-folder per class, images inside.")
    backbone = col1.selectbox("Backbone", list(BACKBONES), key="compare_backbone",
                              format_func=lambda name: f"{name}: {BACKBONES[name].description}")
    head = col1.selectbox("Head", list(HEADS), key="compare_head",
                          format_func=lambda name: f"{name}: {HEADS[name].description}")
    weight_options = ["imagenet", "none"] if BACKBONES[backbone].pretrained else ["none"]
    weights = col2.selectbox("Weights of the pretrained strategies", weight_options, key="compare_weights",
                             help="scratch always starts from random weights: it is the no-transfer baseline.")
    min_size = BACKBONES[backbone].min_size
    values = dict(
        dataset=dataset, data_dir=data_dir or None, backbone=backbone, head=head, weights=weights,
        epochs=col2.number_input("Epochs", min_value=1, max_value=1000, value=None, key="compare_epochs",
                                 placeholder="auto: each strategy's default",
                                 help="Passes over the images per strategy (fine_tune: its fine-tuning phase); "
                                      "empty: each strategy's own default. Heads on cached features are fitted "
                                      "to convergence either way."),
        samples_per_class=col2.number_input("Images per class (cap, 0 = all)", min_value=0,
                                            value=DEFAULTS.samples_per_class, step=50, key="compare_samples_per_class"),
        image_size=col3.number_input("Image size (pixels)", min_value=min_size, max_value=1024,
                                     value=max(DEFAULTS.image_size, min_size), step=16, key="compare_image_size"),
        batch_size=col3.number_input("Batch size", min_value=1, max_value=4096, value=DEFAULTS.batch_size,
                                     key="compare_batch_size"),
    )
    if dataset == "synthetic":
        values["synthetic_classes"] = col3.number_input("Synthetic classes", min_value=2, max_value=10,
                                                        value=DEFAULTS.synthetic_classes, key="compare_synthetic_classes")
    values = {k: int(v) if isinstance(v, float) else v for k, v in values.items()}
    values["fine_tune_epochs"] = values["epochs"]  # None: each strategy's default
    options = sweeps.strategies_for(backbone)
    # All of them at first; later, keep the user's choice minus what a new backbone cannot run.
    chosen = st.session_state.get("compare_strategies", options)
    st.session_state["compare_strategies"] = [name for name in chosen if name in options]
    strategies = st.multiselect("Strategies", options, key="compare_strategies",
                                help="One run each, on the same seeded split; scratch is the no-transfer baseline.")
    try:
        base = RunConfig(**values)
        sweeps.sweep_configs(base, strategies, "check")
    except UserError as exc:
        st.error(str(exc))
        return None
    return base, strategies


@st.cache_data(show_spinner="Measuring how close the images are to ImageNet...", max_entries=32)
def _similarity(cfg_json: str, backbone: str):
    from tl.advisor import measure_similarity

    return measure_similarity(load_data(cfg_json), backbone, seed=RunConfig.from_json(cfg_json).seed)


def start_sweep(root: str, manager, base, strategies):
    """Measure the advisor's inputs, write the sweep and queue its runs; return the sweep,
    or ``None`` after showing why it could not start."""
    from tl.advisor import advise, images_per_class

    try:
        key = data_key(base)
        data = load_data(key)
        advice = advise(images_per_class(data), _similarity(key, base.backbone))
        sweep = sweeps.create(base, strategies, root, advice=advice.to_dict())
        sweeps.submit(sweep, manager)
    except UserError as exc:
        st.error(str(exc))
        return None
    return sweep


def current_sweep(root: str):
    """The sweep this session shows (or the URL's ``?sweep=``), else ``None``."""
    sweep_id = st.session_state.get("sweep_id") or st.query_params.get("sweep")
    if not sweep_id:
        return None
    try:
        sweep = sweeps.load(sweep_id, root)
    except UserError:
        return None
    show_sweep(sweep.id)
    return sweep


def show_sweep(sweep_id: str) -> None:
    remember("sweep", sweep_id)


# -- a sweep: progress, then results -----------------------------------------------------

def sweep_view(sweep, manager) -> None:
    """The advice, one progress view for all its runs while any is active, the
    comparison of those that finished, and how the advice fared."""
    st.subheader(f"Sweep {sweep.id}")
    advice = sweep.advice
    if advice:
        st.info(f"**Advisor**: {advice['case']} → **{advice['strategy']}**. {advice['basis']}",
                icon=":material/lightbulb:")
    statuses = sweep.statuses()
    active = any(status in sweeps.ACTIVE for status in statuses.values())
    if active:
        _live(sweep, manager, _finished(statuses))
    else:
        st.dataframe(_status_table(sweep, statuses), hide_index=True, key="sweep_status")
    summaries = {run.id: (run, run.summary()) for run in sweep.runs()}  # a damaged run reads as "damaged"
    done = [run for run, row in summaries.values() if row["status"] == "done"]
    if not done:
        return
    table = comparison(done, labels={run.id: summaries[run.id][1]["strategy"] for run in done}, key="sweep")
    verdict = sweeps.verdict(advice["strategy"], table) if advice else None
    if verdict and not active:
        (st.success if verdict["ok"] else st.warning)(verdict["message"])


def _finished(statuses: dict) -> int:
    return sum(status in runs.FINISHED for status in statuses.values())


def _live(sweep, manager, finished: int) -> None:
    """Progress of an active sweep, refreshed every ``LIVE_SECONDS``; the whole page
    reruns once the number of finished runs differs from the ``finished`` it showed."""
    @st.fragment(run_every=LIVE_SECONDS)
    def live():
        statuses = sweep.statuses()
        if _finished(statuses) != finished:
            st.rerun()  # the whole page: a result to fill in, or the sweep has ended
        table = _status_table(sweep, statuses)
        st.progress(finished / len(table), text=f"{finished} of {len(table)} runs finished")
        st.dataframe(table, hide_index=True, key="sweep_status")
        if st.button("Stop sweep", key="sweep_stop"):
            sweeps.stop(sweep, manager)
            st.toast("Stopping: queued runs are cancelled, the running one stops after its current batch.")

    live()


def _status_table(sweep, statuses: dict) -> list:
    ids = sweep.run_ids
    table = []
    for strategy, status in statuses.items():
        row = {"strategy": strategy, "status": status, "epochs": "", "test accuracy": None, "run": ids.get(strategy, "")}
        if strategy in ids and status not in ("not started", "deleted", runs.DAMAGED):
            run = runs.Run(sweep.root / ids[strategy])
            try:
                row["epochs"] = epochs_label(run.config, run.history)
                row["test accuracy"] = run.metrics.get("test_accuracy")
            except runs.RunDamaged:
                row["status"] = runs.DAMAGED
        table.append(row)
    return table


def epochs_label(cfg, history) -> str:
    """Progress in epochs of the image-trained phases ("12/30"), or the iterations of a head
    fitted exactly on cached features."""
    stepped = sum(1 for entry in history if entry.get("method") != "exact")
    if STRATEGIES[cfg.strategy].uses_features and stepped == 0:
        return f"{len(history)} iterations (exact fit)" if history else ""
    return f"{stepped}/{cfg.total_epochs}"


# -- any runs side by side ---------------------------------------------------------------

def comparison(run_list: list, labels: dict, key: str) -> list:
    """The table (with a CSV download), validation curves against epoch and time,
    test accuracy against training time with the Pareto front, and per-class accuracy.
    Returns the table's rows (:func:`tl.sweep.rows`)."""
    table = sweeps.rows(run_list)
    st.dataframe(table, hide_index=True, key=f"{key}_table", column_config={
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="%.4f"),
        "best_val_accuracy": st.column_config.NumberColumn("best val accuracy", format="%.4f"),
        "train_seconds": st.column_config.NumberColumn("train s", format="%.2f"),
        "extract_seconds": st.column_config.NumberColumn("feature extraction s", format="%.2f"),
        "images_per_second": st.column_config.NumberColumn("images/s", format="%.1f"),
    })
    st.download_button("Download the table (CSV)", data=sweeps.to_csv(table), file_name="comparison.csv",
                       mime="text/csv", key=f"{key}_csv", on_click="ignore")
    curves = [{"label": labels[run.id], "history": run.history} for run in run_list]
    for x in ("epoch", "time"):
        left, right = st.columns(2)
        left.plotly_chart(plots.compare_curves(curves, "val_accuracy", x), key=f"{key}_val_accuracy_{x}")
        right.plotly_chart(plots.compare_curves(curves, "val_loss", x), key=f"{key}_val_loss_{x}")
    # Feature extraction is part of what those strategies cost (0 when the cache was reused).
    cost = [{"label": labels[row["run_id"]], "test_accuracy": row["test_accuracy"],
             "train_seconds": (row["train_seconds"] or 0) + (row["extract_seconds"] or 0)
             if row["train_seconds"] is not None else None} for row in table]
    left, right = st.columns(2)
    left.plotly_chart(plots.accuracy_vs_cost(cost), key=f"{key}_cost")
    left.caption("Training time includes feature extraction (zero when cached features were reused).")
    right.plotly_chart(plots.compare_per_class([{"label": labels[run.id], "metrics": run.metrics}
                                                for run in run_list]), key=f"{key}_per_class")
    return table


def pick_runs(root: str) -> None:
    """Choose any finished runs and compare them."""
    rows = {run.id: (run, run.summary()) for run in runs.list_runs(root)}  # damaged runs read as "damaged"
    done = {run_id: pair for run_id, pair in rows.items() if pair[1]["status"] == "done"}
    if not done:
        st.info("No finished runs yet: train some on the Train page, or run a sweep.")
        return
    by_id = {run_id: run for run_id, (run, _) in done.items()}
    labels = {run_id: f"{row['strategy']} · {run_id}" for run_id, (_, row) in done.items()}
    chosen = st.multiselect("Finished runs", list(by_id), key="compare_pick", format_func=labels.get,
                            placeholder="Choose two or more runs")
    if not chosen:
        st.caption("Choose the runs to put side by side.")
        return
    comparison([by_id[run_id] for run_id in chosen], labels, key="pick")
