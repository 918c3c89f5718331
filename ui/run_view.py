"""A run on the Train page: dataset preview, live progress, results, and the runs list."""

import json

import streamlit as st

from tl import plots, runs
from tl.errors import UserError
from tl.owners import run_owner
from ui import owner
from ui.state import LIVE_SECONDS, PLOTLY_CONFIG, data_key, load_data, runs_dir, show_run

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
    from tl import budget
    from tl.datasets import spec_of

    count = budget.images_hint(cfg)
    # A download is read only once the preview above asked for it.
    readable = not spec_of(cfg.dataset).downloads or st.session_state.get("train_preview_download")
    if count is None and readable:
        try:
            count = len(load_data(data_key(cfg)))
        except UserError:
            return  # the preview above already says why
    if count is None:
        return
    found = budget.estimate(cfg, count)
    try:
        limit = budget.budget_mb()
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


# -- results ---------------------------------------------------------------------------

def results(run) -> None:
    """Test metrics, curves, per-class accuracy, confusion matrix, mistakes, downloads."""
    status = run.status()
    st.subheader(f"Run {run.id}")
    problem = run.damage()
    if problem:
        st.error(problem, icon=":material/broken_image:")
        return
    if status["status"] != "done":
        said = {"failed": "This run failed", "cancelled": "This run was stopped before it finished"}
        message = said.get(status["status"], f"This run is {status['status']}")
        reason = status.get("reason")
        message += f": {reason}" if reason else "."
        (st.warning if status["status"] == "cancelled" else st.error)(message)
        if run.history:
            _curves(run)
        return
    metrics = run.metrics
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Test accuracy", f"{metrics['test_accuracy']:.1%}")
    m2.metric("Test loss", f"{metrics['test_loss']:.3f}")
    m3.metric("Training time", f"{metrics['train_seconds']:.0f} s")
    m4.metric("Trained parameters", _count(metrics["trainable_params"]),
              help=f"{metrics['trainable_params']:,} of the model's {metrics['total_params']:,} parameters were trained.")
    st.caption(f"{metrics['test_size']:,} test images · {metrics['trainable_params']:,} of "
               f"{metrics['total_params']:,} parameters trained.")
    _engine_caption(metrics)
    _convergence(metrics)
    _curves(run)
    left, right = st.columns(2)
    left.plotly_chart(plots.per_class_accuracy(metrics), key=f"per_class_{run.id}", config=PLOTLY_CONFIG)
    picked = right.plotly_chart(plots.confusion_matrix(metrics), key=f"confusion_{run.id}",
                                on_select="rerun", selection_mode="points", config=PLOTLY_CONFIG)
    _mistakes(run, metrics, _clicked_cell(picked))
    with st.expander("Map of the test images"):
        _test_map(run, metrics)
    _downloads(run)
    _export_downloads(run)


def _engine_caption(metrics) -> None:
    """Which engine ran the frozen backbone, and the served model's accuracy beside the
    cached features' when those were not fp32."""
    if not metrics.get("engine"):
        return
    text = (f"Frozen backbone on {ENGINE_NAMES.get(metrics['engine'], metrics['engine'])} "
            f"({metrics['engine_precision']}), {metrics.get('extract_seconds') or 0:.1f} s of feature extraction.")
    if metrics.get("feature_test_accuracy") is not None:
        text += (f" The test accuracy above is the saved model's (float32); on the {metrics['engine_precision']} "
                 f"features it was {metrics['feature_test_accuracy']:.1%}.")
    st.caption(text)


def _count(n: int) -> str:
    """A parameter count short enough for a metric tile: 72.6k, 4.0M."""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _convergence(metrics) -> None:
    """How each phase ended: converged (fitted exactly, early-stopped, validation loss
    flat) or still improving, so under-training is not mistaken for a weak backbone."""
    reports = metrics.get("convergence") or []
    lines = [f"{r['phase']}: {r['summary']}" for r in reports]
    if any(r.get("converged") is False for r in reports):
        st.warning("Not converged: " + "; ".join(lines) + ". Raise the epochs (or at least this many steps) "
                   "and train again.", icon=":material/trending_down:")
    elif lines:
        st.caption("Converged: " + "; ".join(lines) + ".")


def _curves(run) -> None:
    left, right = st.columns(2)
    left.plotly_chart(plots.curves(run.history, "loss"), key=f"loss_{run.id}", config=PLOTLY_CONFIG)
    right.plotly_chart(plots.curves(run.history, "accuracy"), key=f"acc_{run.id}", config=PLOTLY_CONFIG)


def _clicked_cell(picked):
    points = (picked or {}).get("selection", {}).get("points", []) if picked else []
    if points and points[0].get("customdata"):
        true, predicted = points[0]["customdata"][:2]
        return true, predicted
    return None


def _mistakes(run, metrics, clicked) -> None:
    wrong = metrics["misclassified"]
    st.markdown(f"**Misclassified test images** ({len(wrong)} of {metrics['test_size']})")
    if not wrong:
        return
    names = ["any"] + metrics["class_names"]
    # A selected cell stays selected over reruns: apply it when it changes, so the dropdowns
    # can still be changed by hand afterwards.
    if clicked and st.session_state.get(f"mis_click_{run.id}") != clicked:
        st.session_state[f"mis_true_{run.id}"], st.session_state[f"mis_pred_{run.id}"] = clicked
    st.session_state[f"mis_click_{run.id}"] = clicked
    c1, c2 = st.columns(2)
    true = c1.selectbox("True class", names, key=f"mis_true_{run.id}")
    predicted = c2.selectbox("Predicted class", names, key=f"mis_pred_{run.id}",
                             help="Or click a cell of the confusion matrix.")
    shown = [m for m in wrong if true in ("any", m["true"]) and predicted in ("any", m["predicted"])]
    if not shown:
        st.caption("No mistakes of that kind.")
        return
    read = _item_reader(run)
    if isinstance(read, str):
        st.warning(f"Cannot show the images: {read}")
        return
    columns = st.columns(6)
    for n, item in enumerate(shown[:24]):
        image = read(item)
        if image is None:
            continue  # the data changed since training
        columns[n % 6].image(image, width=96,
                             caption=f"{item['true']} → {item['predicted']} ({item['confidence']:.0%})")
    if len(shown) > 24:
        st.caption(f"Showing 24 of {len(shown)}.")


def _test_map(run, metrics) -> None:
    """The run's test images on the first two principal components of the backbone
    features it was trained on (from the feature cache), coloured right or wrong."""
    from tl import features
    from tl.check import pca_map
    from tl.paths import cache_root

    events, _ = run.events()
    key = next((e["key"] for e in events if e.get("type") == "features" and e.get("key")), None)
    store = features.lookup(cache_root(runs_dir()), key) if key else None
    if store is None:
        st.caption("No map: this run trained on images, not on cached backbone features (or the cache was "
                   "cleared).")
        return
    try:
        data = load_data(data_key(run.config))
        split = run._json("split.json", dict, {})
    except UserError as exc:
        st.caption(f"No map: {exc}")
        return
    if data.fingerprint != split.get("fingerprint") or len(data) != len(store):
        st.caption("No map: the data changed since this run trained (a made dataset's new version, or an edited "
                   "folder).")
        return
    index = {k: i for i, k in enumerate(data.keys)}
    keys = [k for k in split.get("test", []) if k in index]
    if len(keys) < 3:
        st.caption("No map: too few test images.")
        return
    wrong = {m["key"]: m for m in metrics.get("misclassified", [])}
    coordinates, explained = pca_map(store.read([index[k] for k in keys]))
    names = run.labels
    images = [{"file": k, "x": float(x), "y": float(y), "likely": wrong[k]["predicted"] if k in wrong else None,
               "label": "wrong" if k in wrong else "right",
               "given": names[int(data.labels[index[k]])]} for k, (x, y) in zip(keys, coordinates)]
    st.plotly_chart(plots.check_map(images, ["right", "wrong"], title="Test images (PCA of the cached features)",
                                    explained=list(explained), colour_by="answer"),
                    key=f"test_map_{run.id}", config=PLOTLY_CONFIG)
    st.caption(f"{len(keys)} test images: {sum(k in wrong for k in keys)} wrong. Points near another class's "
               "cloud are the confusable ones; the Check my data expander below the settings maps every image.")


def _item_reader(run):
    """A function from a misclassified item to its image (``None`` when it is gone), or the
    sentence saying why none can be read. A made dataset's photos are read by the keys the
    run recorded, so an edited dataset still shows the photos this run was tested on."""
    from tl.data import made

    if made.is_made(run.config.dataset):
        origin = run.data_origin
        folder = made.photo_folder(origin, runs_dir())  # looked up once for the whole gallery

        def read_made(item):
            path = made.key_path(origin, item["key"], folder=folder) if folder else None
            return None if path is None else made.read_file(path, 96)
        return read_made
    try:
        data = load_data(data_key(run.config))
    except UserError as exc:
        return str(exc)

    def read(item):
        if item["item"] >= len(data) or data.keys[item["item"]] != item["key"]:
            return None
        return data.read(item["item"])
    return read


def _downloads(run) -> None:
    c1, c2, c3 = st.columns(3)
    c1.download_button("model.keras", data=lambda: run.model_path.read_bytes(), file_name=f"{run.id}.keras",
                       key=f"dl_model_{run.id}", on_click="ignore")
    c2.download_button("config.json", data=json.dumps(run.config.to_dict(), indent=2),
                       file_name="config.json", key=f"dl_config_{run.id}", on_click="ignore")
    c3.download_button("metrics.json", data=json.dumps(run.metrics, indent=2), file_name="metrics.json",
                       key=f"dl_metrics_{run.id}", on_click="ignore")


# (format, quantize, label); labels and the card are instant, the rest take seconds to build.
EXPORTS = (("savedmodel", False, "SavedModel (.zip)"), ("tflite", False, "TFLite, float"),
           ("tflite", True, "TFLite, 8-bit"), ("labels", False, "labels.txt"),
           ("card", False, "Model card (.md)"))


def _export_downloads(run) -> None:
    """Other formats: a Build button, then (in its place) a download. Builds are kept in the
    run's exports/ folder, so reruns and other sessions download without converting again."""
    from tl import export

    st.markdown("**Export** (the TFLite models take a uint8 RGB image of any size and resize it to "
                f"{run.config.image_size}x{run.config.image_size} inside; 8-bit: weights quantised, about "
                "4x smaller; see the model card)")
    columns = st.columns(3)
    for n, (fmt, quantize, label) in enumerate(EXPORTS):
        column = columns[n % 3]
        key = f"{fmt}{'_int8' if quantize else ''}_{run.id}"
        path = export.cached_path(run, fmt, quantize)
        slot = column.empty()  # the Build button, replaced by the download once built
        instant = fmt in ("labels", "card")
        if not path.is_file() and (instant or slot.button(f"Build {label}", key=f"build_{key}",
                                                           width="stretch")):
            try:
                with slot, st.spinner(f"Building {label}..."):
                    export.cached(run, fmt, quantize)
            except UserError as exc:
                slot.error(str(exc))
        if path.is_file():
            slot.download_button(label, data=lambda path=path: path.read_bytes(), file_name=path.name,
                                 key=f"dl_{key}", on_click="ignore", width="stretch",
                                 icon=":material/download:")


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
    refused = owner.refusal(run_owner(runs.runs_root(root) / chosen))
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
    mine = [row for row in rows if owner.made_here(run_owner(runs.runs_root(root) / row["run_id"]))]
    if st.toggle(f"Only my runs ({len(mine)} of {len(rows)})", key="runs_only_mine",
                 help="Everybody can open, classify with and compare every run here; "
                      "you can stop or delete only the ones you made (in this browser)."):
        return mine
    return rows


def delete_run(run_id: str, root: str, manager) -> None:
    """Stop and delete a run if this session may (:mod:`ui.owner`); raises
    :class:`tl.owners.NotYours`, or the UserError of a run that cannot be deleted."""
    owner.require(run_owner(runs.runs_root(root) / run_id))
    manager.cancel(run_id)
    runs.delete(run_id, root)
