"""The Compare page's sweep: its form, the estimate before it starts, starting it, and its
live progress and results (the table and charts are :mod:`ui.compare_view`'s)."""

import streamlit as st

from tl import run_cost, runs
from tl import sweep as sweeps
from tl.backbones import BACKBONES
from tl.config import RunConfig
from tl.datasets import spec_of
from tl.errors import UserError
from tl.heads import HEADS
from ui import owner
from ui.compare_view import comparison, epochs_label, show_table
from ui.state import (LIVE_SECONDS, data_key, dataset_choices, image_size_default, load_data, remember,
                      restore_form, save_form, widget_default)
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
    found = run_cost.estimate_sweep(sweeps.sweep_configs(base, strategies, "estimate"), count)
    try:
        limit = run_cost.budget_mb()
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
        st.warning(f"Over the memory budget of {limit:,.0f} MB ({run_cost.BUDGET_ENV}): {needs}. Untick "
                   f"{'them' if len(over) > 1 else 'it'} or lower the image size or batch size: Run comparison "
                   "queues nothing until every run fits.", icon=":material/memory:")


def estimate_line(found, count: int) -> str:
    """A sweep's :class:`tl.run_cost.SweepEstimate` in one sentence."""
    peak = f"peak memory ~{found.memory_mb:,.0f} MB ({found.largest}) on a CPU"
    if len(found.each) == 1:
        return f"Estimated ~{_duration(found.seconds)}, {peak} ({count:,} images)."
    slowest = _duration(found.each[found.slowest].seconds)
    return (f"Estimated ~{_duration(found.seconds)} in all ({found.slowest} ~{slowest} of it), {peak}: "
            f"{len(found.each)} runs one after another, {count:,} images each.")


def _duration(seconds: float) -> str:
    """Seconds under two minutes, else minutes (as :meth:`tl.run_cost.Estimate.describe`)."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _image_count(base) -> int | None:
    """Images each run of the sweep will use: from the config where it tells (synthetic,
    cifar10), else from the data (read once, kept for Run comparison), unless that needs a
    download; ``None`` (after a caption saying why) when it cannot be told now."""
    from tl import datasets

    count = run_cost.images_hint(base)
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
    """Raise the memory budget's refusal (:class:`tl.run_cost.BudgetError`) of the first run
    that would not fit, before anything of the sweep is written or queued."""
    for cfg in sweeps.sweep_configs(base, strategies, "check"):
        try:
            run_cost.check(cfg, count)
        except run_cost.BudgetError as exc:
            raise run_cost.BudgetError(f"Nothing was queued: the {cfg.strategy} run would not fit (untick it, or "
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
