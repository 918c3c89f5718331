"""The Compare page's pieces: the sweep form, the sweep's live progress, and the
side-by-side views of any set of runs (table, curves, accuracy vs time, per class, CSV)."""

import streamlit as st

from tl import budget, plots, runs
from tl import sweep as sweeps
from tl.backbones import BACKBONES
from tl.config import RunConfig
from tl.datasets import spec_of
from tl.errors import UserError
from tl.heads import HEADS
from tl.strategies import STRATEGIES
from ui import owner
from ui.state import (LIVE_SECONDS, PLOTLY_CONFIG, data_key, dataset_choices, image_size_default, load_data,
                      remember, restore_form, save_form, widget_default)
from ui.train_form import described_choice, descriptions

DEFAULTS = RunConfig()


# -- the sweep form ----------------------------------------------------------------------

FORM_FIELDS = ("dataset", "data_dir", "backbone", "head", "weights", "epochs", "samples_per_class", "image_size",
               "batch_size", "synthetic_classes")
SAVED = "compare_saved"  # the form's values, kept when Streamlit drops the widgets' state off the page


def follow_sweep(sweep) -> None:
    """Set the form to ``sweep``'s settings, once each time the sweep on screen changes (a
    reload, a shared ``?sweep=`` link), so the form describes what is shown below it."""
    if sweep is None or st.session_state.get("compare_form_sweep") == sweep.id:
        return
    st.session_state["compare_form_sweep"] = sweep.id
    try:
        cfg, strategies = sweep.config, sweep.strategies
    except (UserError, KeyError, TypeError, ValueError):
        return  # a damaged sweep file: the view below says so; keep the form as it is
    for field in FORM_FIELDS:
        st.session_state[f"compare_{field}"] = getattr(cfg, field)
    st.session_state["compare_strategies"] = list(strategies)
    st.session_state["compare_strategies_for"] = [cfg.backbone, cfg.weights]
    st.session_state["compare_strategies_default"] = None  # a choice to keep, not a default


def sweep_form(sweep=None):
    """Render the sweep's choices (set to ``sweep``'s when the sweep on screen changed);
    return ``(base config, strategies)``, or ``None`` after showing why they cannot run."""
    restore_form(SAVED)
    follow_sweep(sweep)
    try:
        return _sweep_form()
    finally:
        save_form(SAVED, [f"compare_{f}" for f in FORM_FIELDS] + ["compare_strategies"])


def _sweep_form():
    col1, col2, col3 = st.columns(3)
    dataset = described_choice(col1, "Dataset", dataset_choices(st.session_state.get("compare_dataset")),
                               "compare_dataset",
                               "The images every strategy trains and is tested on (the same seeded split).")
    data_dir = None
    if spec_of(dataset).needs_dir:
        data_dir = col1.text_input("Data folder on the server", key="compare_data_dir",
                                   placeholder="/path/to/photos", help="One sub-folder per class, images inside.")
    backbone = described_choice(col1, "Backbone", descriptions(BACKBONES), "compare_backbone",
                                "The network every strategy starts from.")
    head = described_choice(col1, "Head", descriptions(HEADS), "compare_head",
                            "The classifier on top of the backbone, the same for every strategy.")
    weight_options = ["imagenet", "none"] if BACKBONES[backbone].pretrained else ["none"]
    weights = col2.selectbox("Weights of the pretrained strategies", weight_options, key="compare_weights",
                             help="scratch always starts from random weights: it is the no-transfer baseline.")
    min_size = BACKBONES[backbone].min_size
    image_size_default("compare_image_size", DEFAULTS.image_size, min_size)
    for field in ("samples_per_class", "batch_size", "synthetic_classes"):
        widget_default(f"compare_{field}", getattr(DEFAULTS, field))
    values = dict(
        dataset=dataset, data_dir=data_dir or None, backbone=backbone, head=head, weights=weights,
        epochs=col2.number_input("Epochs", min_value=1, max_value=1000, value=None, key="compare_epochs",
                                 placeholder="auto: each strategy's default",
                                 help="Passes over the images per strategy (fine_tune: its fine-tuning phase); "
                                      "empty: each strategy's own default. Heads on cached features are fitted "
                                      "to convergence either way."),
        samples_per_class=col2.number_input("Images per class (cap, 0 = all)", min_value=0,
                                            step=50, key="compare_samples_per_class"),
        image_size=col3.number_input("Image size (pixels)", min_value=min_size, max_value=1024,
                                     step=16, key="compare_image_size"),
        batch_size=col3.number_input("Batch size", min_value=1, max_value=4096, key="compare_batch_size"),
    )
    if dataset == "synthetic":
        values["synthetic_classes"] = col3.number_input("Synthetic classes", min_value=2, max_value=10,
                                                        key="compare_synthetic_classes")
    values = {k: int(v) if isinstance(v, float) else v for k, v in values.items()}
    values["fine_tune_epochs"] = values["epochs"]  # None: each strategy's default
    strategies = _strategy_choice(backbone, weights)
    try:
        base = RunConfig(**values)
        sweeps.sweep_configs(base, strategies, "check")
    except UserError as exc:
        st.error(str(exc))
        return None
    return base, strategies


def _strategy_choice(backbone: str, weights: str) -> list:
    """The strategies multiselect. Strategies whose weights cannot be had now are not
    offered; transfer strategies with nothing to transfer are offered but not chosen by
    default; each with its reason. A new backbone or weights resets an untouched choice to
    the new default, and keeps a changed one minus what no longer applies."""
    choices = sweeps.strategy_choices(backbone, weights)
    options, default, pointless = choices["options"], choices["default"], choices["pointless"]
    if choices["unavailable"]:
        st.warning(f"{choices['why']} Not offered until then: {', '.join(choices['unavailable'])}.",
                   icon=":material/cloud_off:")
    chosen = st.session_state.get("compare_strategies")
    before = st.session_state.get("compare_strategies_default")
    if chosen is None or chosen == before:
        chosen = default  # first visit, or the user kept the previous default
    elif st.session_state.get("compare_strategies_for") != [backbone, weights]:
        chosen = [name for name in chosen if name in options and name not in pointless] or default
    st.session_state["compare_strategies"] = [name for name in chosen if name in options]
    st.session_state["compare_strategies_default"] = default
    st.session_state["compare_strategies_for"] = [backbone, weights]
    strategies = st.multiselect("Strategies", options, key="compare_strategies",
                                help="One run each, on the same seeded split; scratch is the no-transfer baseline.")
    if pointless:
        names = list(pointless)
        why = pointless[names[0]] + (f" The same holds for {', '.join(names[1:])}." if len(names) > 1 else "")
        picked = [name for name in strategies if name in pointless]
        if picked:
            st.warning(why, icon=":material/warning:")
        else:
            st.caption(f"Not chosen by default (add them above to compare anyway): {why}")
    return strategies


# -- the estimate, before Run comparison -------------------------------------------------

def sweep_estimate(base, strategies) -> None:
    """Before Run comparison: the sweep's estimated time (its runs one after another, the
    slowest named) and peak memory (its largest run's), each run's in the caption's help;
    with a memory budget set, a warning naming the strategies it would refuse."""
    count = _image_count(base)
    if count is None:
        return
    found = budget.estimate_sweep(sweeps.sweep_configs(base, strategies, "estimate"), count)
    try:
        limit = budget.budget_mb()
    except UserError as exc:
        st.caption(str(exc))
        return
    each = "\n".join(f"- {name}: ~{_duration(run.seconds)}, ~{run.memory_mb:,.0f} MB"
                     for name, run in found.each.items())
    st.caption(estimate_line(found, count) + (f" Budget: {limit:,.0f} MB." if limit else ""),
               help=f"Each run's estimate:\n\n{each}\n\nTimes allow every epoch; early stopping usually ends "
                    "sooner.")
    over = {name: run.memory_mb for name, run in found.each.items() if limit is not None and run.memory_mb > limit}
    if over:
        needs = ", ".join(f"{name} ~{mb:,.0f} MB" for name, mb in over.items())
        st.warning(f"Over the memory budget of {limit:,.0f} MB ({budget.BUDGET_ENV}): {needs}. Untick "
                   f"{'them' if len(over) > 1 else 'it'} or lower the image size or batch size: Run comparison "
                   "queues nothing until every run fits.", icon=":material/memory:")


def estimate_line(found, count: int) -> str:
    """A sweep's :class:`tl.budget.SweepEstimate` in one sentence."""
    peak = f"peak memory ~{found.memory_mb:,.0f} MB ({found.largest}) on a CPU"
    if len(found.each) == 1:
        return f"Estimated ~{_duration(found.seconds)}, {peak} ({count:,} images)."
    slowest = _duration(found.each[found.slowest].seconds)
    return (f"Estimated ~{_duration(found.seconds)} in all ({found.slowest} ~{slowest} of it), {peak}: "
            f"{len(found.each)} runs one after another, {count:,} images each.")


def _duration(seconds: float) -> str:
    """Seconds under two minutes, else minutes (as :meth:`tl.budget.Estimate.describe`)."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _image_count(base) -> int | None:
    """Images each run of the sweep will use: from the config where it tells (synthetic,
    cifar10), else from the data (read once, kept for Run comparison), unless that needs a
    download; ``None`` (after a caption saying why) when it cannot be told now."""
    from tl import datasets

    count = budget.images_hint(base)
    if count is not None:
        return count
    spec = datasets.spec_of(base.dataset)
    if spec.downloads and not (spec.download and datasets.is_cached(datasets.DOWNLOADS[spec.download])):
        st.caption(f"The time and memory estimate appears once {base.dataset} is downloaded (Run comparison "
                   "downloads it first).")
        return None
    try:
        return len(load_data(data_key(base)))
    except UserError as exc:
        st.caption(f"No time and memory estimate: {exc}")
        return None


def _check_budget(base, strategies, count: int) -> None:
    """Raise the memory budget's refusal (:class:`tl.budget.BudgetError`) of the first run
    that would not fit, before anything of the sweep is written or queued."""
    for cfg in sweeps.sweep_configs(base, strategies, "check"):
        try:
            budget.check(cfg, count)
        except budget.BudgetError as exc:
            raise budget.BudgetError(f"Nothing was queued: the {cfg.strategy} run would not fit (untick it, or "
                                     f"change the settings). {exc}") from None


@st.cache_data(show_spinner="Measuring how close the images are to ImageNet...", max_entries=32)
def _similarity(cfg_json: str, backbone: str):
    from tl.advisor import measure_similarity

    return measure_similarity(load_data(cfg_json), backbone, seed=RunConfig.from_json(cfg_json).seed)


def start_sweep(root: str, manager, base, strategies):
    """Measure the advisor's inputs, write the sweep and queue its runs; return the sweep,
    or ``None`` after showing why it could not start."""
    from tl.advisor import Similarity, advise, images_per_class, no_transfer

    try:
        key = data_key(base)
        data = load_data(key)
        _check_budget(base, strategies, len(data))  # all or nothing: no sweep with some runs refused
        unavailable = sweeps.weights_unavailable(base.backbone, base.weights)
        if no_transfer(base.backbone, base.weights, unavailable):  # the advice is scratch: nothing to measure
            similarity = Similarity(None, None, 0, "not measured, as nothing pretrained can be transferred.")
        else:
            similarity = _similarity(key, base.backbone)
        advice = advise(images_per_class(data), similarity, backbone=base.backbone, weights=base.weights,
                        unavailable=unavailable)
        sweep = sweeps.create(base, strategies, root, advice=advice.to_dict())
        sweeps.submit(sweep, manager, owner=owner.digest())
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
    except sweeps.SweepNotFound:
        st.warning(f"No sweep '{sweep_id}' in {sweeps.sweeps_root(root)}; it was deleted or the link comes from "
                   "another runs folder, so start a new comparison above.", icon=":material/search_off:")
        return None
    show_sweep(sweep.id)
    return sweep


def show_sweep(sweep_id: str) -> None:
    remember("sweep", sweep_id)


# -- a sweep: progress, then results -----------------------------------------------------

def sweep_view(sweep, manager) -> None:
    """The advice, one table of all its runs (live while any is active: status, progress,
    results, why a run failed), and the charts and verdict for those that finished."""
    st.subheader(f"Sweep {sweep.id}")
    cfg = sweep.config
    st.caption(f"{cfg.dataset} · backbone {cfg.backbone} · head {cfg.head} · weights {cfg.weights} "
               "(scratch: random)")
    advice = sweep.advice
    if advice:
        reason = f" {advice['reason']}" if advice.get("reason") else ""
        st.info(f"**Advisor**: {advice['case']} → **{advice['strategy']}**.{reason}\n\n{advice['basis']}",
                icon=":material/lightbulb:")
    table = sweep_table(sweep)
    active = any(row["status"] in sweeps.ACTIVE for row in table)
    if active:
        _live(sweep, manager, _finished(table))
    else:
        show_table(table, key="sweep_table")
    done = {row["run_id"]: row["strategy"] for row in table if row["status"] == "done"}  # damaged: "damaged"
    if not done:
        return
    comparison([runs.Run(sweep.root / run_id) for run_id in done], labels=done, key="sweep", table=table)
    verdict = sweeps.verdict(advice["strategy"], table) if advice else None
    if verdict and not active:
        (st.success if verdict["ok"] else st.warning)(verdict["message"])


def _finished(table: list) -> int:
    return sum(row["status"] in runs.FINISHED for row in table)


def _live(sweep, manager, finished: int) -> None:
    """Progress of an active sweep, refreshed every ``LIVE_SECONDS``; the whole page
    reruns once the number of finished runs differs from the ``finished`` it showed."""
    @st.fragment(run_every=LIVE_SECONDS)
    def live():
        table = sweep_table(sweep)
        if _finished(table) != finished:
            st.rerun()  # the whole page: a result to fill in, or the sweep has ended
        st.progress(finished / len(table), text=f"{finished} of {len(table)} runs finished")
        show_table(table, key="sweep_table")
        owner.guarded_button("Stop sweep", "sweep_stop", _stop_refusal(sweep), lambda: stop_sweep(sweep, manager),
                             "Stopping: queued runs are cancelled, the running one stops after its current batch.")

    live()


def _stop_refusal(sweep) -> str | None:
    """Why this session may not stop ``sweep`` (another visitor's runs), or ``None``."""
    from tl.owners import run_owner

    for run in sweep.runs():
        refused = owner.refusal(run_owner(run.path), "stop")
        if refused:
            return refused
    return None


def stop_sweep(sweep, manager) -> None:
    """Stop ``sweep`` if this session may stop every run of it, else raise
    :class:`tl.owners.NotYours`."""
    from tl.owners import run_owner

    for run in sweep.runs():
        owner.require(run_owner(run.path), "stop")
    sweeps.stop(sweep, manager)


def sweep_table(sweep) -> list:
    """:func:`tl.sweep.sweep_rows` with each run's progress in epochs."""
    table = sweeps.sweep_rows(sweep)
    for row in table:
        row["epochs"] = ""
        if row["run_id"] and row["status"] not in ("not started", "deleted", runs.DAMAGED):
            run = runs.Run(sweep.root / row["run_id"])
            try:
                row["epochs"] = epochs_label(run.config, run.history)
            except runs.RunDamaged:
                row["status"] = runs.DAMAGED
    return table


def epochs_label(cfg, history) -> str:
    """Progress in epochs of the image-trained phases ("12/30"), or the iterations of a head
    fitted exactly on cached features."""
    stepped = sum(1 for entry in history if entry.get("method") != "exact")
    if STRATEGIES[cfg.strategy].uses_features and stepped == 0:
        return f"{history[-1].get('iteration', len(history))} iterations (exact fit)" if history else ""
    return f"{stepped}/{cfg.total_epochs}"


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
