"""A run on the Train page before and while it trains: the dataset preview and estimate,
the live progress, and the runs list (open, delete). A finished run's results are
:mod:`ui.results_view`'s."""

import streamlit as st

from tl import plots, runs
from tl.errors import UserError
from tl.owners import run_owner
from tl.paths import runs_root
from ui import owner
from ui.state import LIVE_SECONDS, PLOTLY_CONFIG, data_key, load_data, show_run

ENGINE_NAMES = {"openvino": "OpenVINO", "tensorflow": "TensorFlow"}


# -- dataset preview -------------------------------------------------------------------

def dataset_preview(cfg) -> None:
    """Images per class, split sizes and a few samples of each class."""
    from tl.datasets import spec_of

    if spec_of(cfg.dataset).downloads and not st.checkbox(
            "Preview (downloads the dataset if it is not cached yet)", key="train_preview_download"):
        return
    try:
        _download_with_progress(spec_of(cfg.dataset))
        data = load_data(data_key(cfg))
    except UserError as exc:
        st.error(str(exc))
        return
    _leakage_warning(data)
    left, right = st.columns([2, 3])
    counts = data.counts()
    left.plotly_chart(plots.class_counts(counts), key="preview_counts", config=PLOTLY_CONFIG)
    sizes = {split: len(idx) for split, idx in data.splits.items()}
    left.caption(f"Split: {sizes['train']} train / {sizes['val']} validation / {sizes['test']} test "
                 f"(seed {cfg.seed}, stratified)."
                 + _skipped_text(data.skipped))
    with right:
        for label, name in enumerate(data.class_names[:10]):
            members = [i for i, y in enumerate(data.labels) if y == label][:8]
            st.image([data.read(i) for i in members], width=56, caption=[name] + [""] * (len(members) - 1))


def _download_with_progress(spec) -> None:
    """Fetch a downloadable dataset that is not cached yet, with a progress bar."""
    from tl import datasets

    if not spec.download or datasets.is_cached(datasets.DOWNLOADS[spec.download]):
        return
    download = datasets.DOWNLOADS[spec.download]
    bar = st.progress(0.0, text=f"Downloading {download.title}...")

    def show(done, total):
        mb = f"{done / 1024**2:.0f}" + (f" of {total / 1024**2:.0f}" if total else "")
        bar.progress(min(done / total, 1.0) if total else 0.0, text=f"Downloading {download.title}: {mb} MB")

    datasets.fetch(download, progress=show)
    bar.empty()


def _skipped_text(skipped) -> str:
    from tl.datasets import skipped_message

    return " " + skipped_message(skipped) if skipped else ""


def _leakage_warning(data) -> None:
    """Warn when identical images fall in more than one split (they inflate test accuracy)."""
    from tl.datasets import leakage

    report = leakage(data)
    if report and report["groups"]:
        pairs = ", ".join(f"{n} {pair}" for pair, n in sorted(report["pairs"].items()))
        example = " = ".join(report["examples"][0][:3])
        st.warning(f"{report['groups']} image(s) appear in more than one split as identical files ({pairs}; "
                   f"e.g. {example}): test accuracy will look better than it is; remove the duplicates.")


def estimate_caption(cfg) -> None:
    """One line: the run's estimated peak memory and CPU time, and the budget if one is set."""
    from tl import run_cost
    from tl.datasets import spec_of

    count = run_cost.images_hint(cfg)
    # A download is read only once the preview above asked for it.
    readable = not spec_of(cfg.dataset).downloads or st.session_state.get("train_preview_download")
    if count is None and readable:
        try:
            count = len(load_data(data_key(cfg)))
        except UserError:
            return  # the preview above already says why
    if count is None:
        return
    found = run_cost.estimate(cfg, count)
    try:
        limit = run_cost.budget_mb()
    except UserError as exc:
        st.caption(str(exc))
        return
    over = limit is not None and found.memory_mb > limit
    st.caption(f"{found.describe()} ({count:,} images)."
               + (f" Budget: {limit:,.0f} MB{' - too much, Train will suggest a smaller setting' if over else ''}."
                  if limit else ""))


# -- live progress ---------------------------------------------------------------------

def live_progress(run, manager) -> None:
    """Status, progress and live curves, refreshed every second while the run is active."""

    @st.fragment(run_every=LIVE_SECONDS)
    def live():
        status = run.status()
        if status["status"] not in ("queued", "running"):
            st.rerun()  # the whole page, to show the results
        progress = _progress(run)
        if status["status"] == "queued":
            place = manager.position(run.id)
            st.info(f"Queued{f' (position {place})' if place else ''}: it starts when the running training ends.")
        else:
            st.progress(progress["fraction"], text=progress["text"])
        history = run.history
        if history or progress["batches"]:
            left, right = st.columns(2)
            left.plotly_chart(plots.curves(history, "loss", batches=progress["batches"]),
                              key=f"live_loss_{run.id}", config=PLOTLY_CONFIG)
            right.plotly_chart(plots.curves(history, "accuracy", batches=progress["batches"]),
                               key=f"live_acc_{run.id}", config=PLOTLY_CONFIG)
        elif status["status"] == "running":
            st.caption("The loss and accuracy curves appear here after the first batches.")
        owner.guarded_button("Stop", "train_stop", owner.refusal(run_owner(run.path), "stop"),
                             lambda: stop_run(run, manager), "Stopping at the end of the current batch...",
                             type="secondary")

    st.subheader(f"Run {run.id}")
    live()


def stop_run(run, manager) -> None:
    """Stop ``run`` if this session may (:mod:`ui.owner`), else raise :class:`tl.owners.NotYours`."""
    owner.require(run_owner(run.path), "stop")
    manager.cancel(run.id)


def _progress(run) -> dict:
    """Fraction done and a line of text, from the run's events (read incrementally)."""
    cache = st.session_state.setdefault("event_cache", {})
    offset, seen = cache.get(run.id, (0, {"batches": [], "features": None, "phase": None, "data": None}))
    events, offset = run.events(offset)
    for event in events:
        if event["type"] == "batch":
            if seen["batches"] and seen["batches"][-1]["epoch"] != event["epoch"]:
                seen["batches"] = []
            seen["batches"].append(event)
        elif event["type"] == "epoch":
            seen["batches"] = []
        elif event["type"] == "features":
            seen["features"] = event
        elif event["type"] == "phase":
            seen["phase"] = event
        elif event["type"] == "data":
            seen["data"] = event
    cache[run.id] = (offset, seen)

    history = run.history
    done = len(history)
    phase = seen["phase"]
    fraction, text = 0.0, ("Starting: loading TensorFlow, reading the data and building the model (a few "
                           "seconds)...")
    if seen.get("data"):
        text = (f"Starting: {seen['data']['images']:,} images read; building the model and compiling the "
                "first steps...")
    if phase and phase.get("method") == "exact":
        iteration = history[-1].get("iteration", 0) if done >= phase["first_epoch"] else 0  # last reported
        fraction, text = 0.9, f"Fitting the head exactly on the cached features: iteration {iteration}"
    elif phase:
        planned = max(phase["epochs"] or 1, 1)
        completed = max(done - phase["first_epoch"] + 1, 0)  # epochs of this phase already finished
        fraction = completed / planned
        text = f"Epoch {min(completed + 1, planned)}/{planned}" + ("" if seen["batches"] else " · first batch...")
        if seen["batches"]:
            last = seen["batches"][-1]
            fraction = (last["epoch"] - phase["first_epoch"] + last["step"] / max(last["steps"] or 1, 1)) / planned
            text = f"Epoch {last['epoch'] - phase['first_epoch'] + 1}/{planned} · step {last['step']}/{last['steps']}"
        text += f" · phase {phase['phase']}"
    elif seen["features"] and seen["features"].get("done") is not None:
        feat = seen["features"]
        fraction = feat["done"] / max(feat["images"], 1) * 0.5
        engine = f" on {ENGINE_NAMES.get(feat['engine'], feat['engine'])} {feat['engine_precision']}" \
            if feat.get("engine") else ""
        text = f"Extracting features{engine}: {feat['done']}/{feat['images']} images"
    return {"fraction": min(max(fraction, 0.0), 1.0), "text": text, "batches": seen["batches"]}


# -- runs list -------------------------------------------------------------------------

def runs_list(root: str, manager) -> None:
    """Every run with its status and accuracy; open one, or delete one after confirming."""
    rows = [run.summary() for run in runs.list_runs(root)]
    st.subheader("Runs")
    if not rows:
        st.caption("No runs yet.")
        return
    rows = _only_mine(rows, root)
    if not rows:
        st.caption("No run here was made in this browser yet; turn the switch off to see everyone's.")
        owner.unlock("runs")
        return
    table = [{
        "run": r["run_id"], "status": r["status"], "dataset": r["dataset"], "backbone": r["backbone"],
        "strategy": r["strategy"], "head": r["head"],
        "test accuracy": None if r["test_accuracy"] is None else round(r["test_accuracy"], 4),
        "seconds": None if r["duration"] is None else round(r["duration"]),
    } for r in rows]
    damaged = [row for row in rows if row["status"] == "damaged"]
    st.caption(f"{len(rows)} run{'s' if len(rows) != 1 else ''}"
               + (f", {len(damaged)} damaged (delete them, or restore their files)" if damaged else ""))
    text = st.column_config.TextColumn
    st.dataframe(table, hide_index=True, key="runs_table", column_config={  # fits 900 px: no column cut off
        "run": text("run", width=250), "status": text("status", width=80), "dataset": text("dataset", width=90),
        "backbone": text("backbone", width=120), "strategy": text("strategy", width=120),
        "head": text("head", width=110),
        "test accuracy": st.column_config.NumberColumn("test acc", width=70, format="percent"),
        "seconds": st.column_config.NumberColumn("seconds", width=70)})
    if damaged:
        with st.expander(f"Why {'these runs are' if len(damaged) > 1 else 'this run is'} damaged",
                         expanded=len(damaged) <= 3):
            for row in damaged:
                st.caption(row["reason"])
    ids = [r["run_id"] for r in rows]
    c1, c2, c3 = st.columns([3, 1, 1])
    chosen = c1.selectbox("Run", ids, key="runs_pick", label_visibility="collapsed")
    if c2.button("Open", key="runs_open"):
        show_run(chosen)
        st.rerun()
    refused = owner.refusal(run_owner(runs_root(root) / chosen))
    if c3.button("Delete", key="runs_delete", disabled=refused is not None, help=refused):
        st.session_state["runs_confirm"] = chosen
    if refused:
        st.caption(f"Run {chosen}: {refused}")
    elif st.session_state.get("runs_confirm") == chosen:
        st.warning(f"Delete run {chosen} and its model? This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Yes, delete", key="runs_delete_yes", type="primary"):
            st.session_state.pop("runs_confirm", None)
            try:
                delete_run(chosen, root, manager)
            except UserError as exc:
                st.error(str(exc))
                return
            if st.session_state.get("run_id") == chosen:
                st.session_state.pop("run_id", None)
                st.query_params.pop("run", None)
            st.rerun()
        if no.button("Keep it", key="runs_delete_no"):
            st.session_state.pop("runs_confirm", None)
            st.rerun()
    owner.unlock("runs")


def _only_mine(rows: list, root: str) -> list:
    """On a shared app (owners enforced), a switch that keeps to the runs this browser made
    (a class's thirty students each find their own); elsewhere ``rows`` as they are."""
    if not owner.policy().enforced:
        return rows
    mine = [row for row in rows if owner.made_here(run_owner(runs_root(root) / row["run_id"]))]
    if st.toggle(f"Only my runs ({len(mine)} of {len(rows)})", key="runs_only_mine",
                 help="Everybody can open, classify with and compare every run here; "
                      "you can stop or delete only the ones you made (in this browser)."):
        return mine
    return rows


def delete_run(run_id: str, root: str, manager) -> None:
    """Stop and delete a run, with what it alone kept, if this session may (:mod:`ui.owner`);
    raises :class:`tl.owners.NotYours`, or the UserError of a run that cannot be deleted."""
    owner.require(run_owner(runs_root(root) / run_id))
    manager.delete(run_id)
