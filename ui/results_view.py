"""A finished (or failed, or stopped) run on the Train page: its test metrics, convergence,
curves, per-class accuracy, confusion matrix and mistakes, how far to trust its answers
(calibration and "none of my classes"), the map of its test images, and its downloads and
exports."""

import json

import streamlit as st

from tl import plots
from tl.data.catalogue import is_made
from tl.errors import UserError
from ui.run_view import ENGINE_NAMES
from ui.state import PLOTLY_CONFIG, data_key, load_data, runs_dir
from ui.teach_view import what_changed
from ui.variants_view import variants_section


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
    what_changed(metrics)
    _convergence(metrics)
    _curves(run)
    left, right = st.columns(2)
    left.plotly_chart(plots.per_class_accuracy(metrics), key=f"per_class_{run.id}", config=PLOTLY_CONFIG)
    picked = right.plotly_chart(plots.confusion_matrix(metrics), key=f"confusion_{run.id}",
                                on_select="rerun", selection_mode="points", config=PLOTLY_CONFIG)
    _mistakes(run, metrics, _clicked_cell(picked))
    _trust(run, metrics)
    with st.expander("Map of the test images"):
        _test_map(run, metrics)
    _downloads(run)
    _export_downloads(run)
    variants_section(run)


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


SOURCES = {"validation": "the validation photos", "out-of-fold": "out-of-fold predictions of the training photos"}


def _trust(run, metrics) -> None:
    """The calibration temperature, the test split's ECE and NLL before and after it, their
    reliability chart, and the "none of my classes" rule; one caption for a run trained
    before either existed."""
    record = metrics.get("calibration")
    if not record:
        st.caption("How far to trust its answers: this run was trained before calibration, so its confidences "
                   "are the model's own and it cannot tell a photo of none of its classes. Train it again to "
                   "get both.")
        return
    with st.expander("How far to trust its answers"):
        if record.get("applied"):
            source = SOURCES.get(record.get("source"), record.get("source"))
            st.markdown("Its confidences are calibrated: its scores are divided by a temperature of "
                        f"{record['temperature']:.2f} before the softmax, so that how sure it says it is matches how "
                        "often it is right (the chart below); the saved model and every format built from it below "
                        "include it. " + (record.get("note") or f"Fitted on {source}."))
        else:
            st.markdown(record.get("note") or "Not calibrated: its confidences are the model's own.")
        st.markdown(f"On the {metrics.get('test_size', 0):,} test photos (lower is better): expected calibration "
                    f"error {_pair(record, 'ece')}, negative log-likelihood {_pair(record, 'nll')}.")
        st.plotly_chart(plots.reliability_chart(record), key=f"reliability_{run.id}", config=PLOTLY_CONFIG)
        st.markdown(_novelty_text(metrics.get("novelty") or {}))


def _pair(record, name: str) -> str:
    """``before → after`` of one of the calibration record's figures ("n/a" where missing)."""
    values = [record.get(f"{name}_{when}") for when in ("before", "after")]
    before, after = ("n/a" if v is None else f"{v:.3f}" for v in values)
    return f"{before} → {after}" if record.get("applied") else before


def _novelty_text(record) -> str:
    """The "none of my classes" rule in two sentences, or why the run has none."""
    if not record.get("rule"):
        return record.get("note") or "This run cannot tell a photo of none of its classes."
    text = ("**None of its classes:** Classify flags a photo that is far from every training photo, or that the "
            "model is less sure of than almost any held-out photo of its classes; at Balanced, "
            f"{record['pass_rate']:.0%} of its classes' own photos pass")
    if record.get("test_unknown_rate") is not None:
        text += f" (it flagged {record['test_unknown_rate']:.0%} of the test photos, all of them of its classes)"
    return text + (". A model file built below gives probabilities only: its model card says to treat an answer "
                   f"below a top probability of {record['confidence_threshold']:.0%} as none of the classes (a "
                   "simpler rule that catches fewer outsiders).")


def _test_map(run, metrics) -> None:
    """The run's test images on the first two principal components of the backbone
    features it was trained on (from the feature cache), coloured right or wrong."""
    from tl import features
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
    coordinates, explained = _pca(run.id, key, tuple(keys), store, [index[k] for k in keys])
    names = run.labels
    images = [{"file": k, "x": float(x), "y": float(y), "likely": wrong[k]["predicted"] if k in wrong else None,
               "label": "wrong" if k in wrong else "right",
               "given": names[int(data.labels[index[k]])]} for k, (x, y) in zip(keys, coordinates)]
    st.plotly_chart(plots.check_map(images, ["right", "wrong"], title="Test images (PCA of the cached features)",
                                    explained=list(explained), colour_by="answer"),
                    key=f"test_map_{run.id}", config=PLOTLY_CONFIG)
    st.caption(f"{len(keys)} test images: {sum(k in wrong for k in keys)} wrong. Points near another class's "
               "cloud are the confusable ones; the Check my data expander below the settings maps every image.")


@st.cache_data(max_entries=32, show_spinner=False)
def _pca(run_id: str, key: str, keys: tuple, _store, _rows):
    """The test map's coordinates, once per run (a finished run's features do not change):
    every session watching a run that has just finished draws it at the same moment."""
    from tl.findings import pca_map

    return pca_map(_store.read(_rows))


def _item_reader(run):
    """A function from a misclassified item to its image (``None`` when it is gone), or the
    sentence saying why none can be read. A made dataset's photos are read by the keys the
    run recorded, so an edited dataset still shows the photos this run was tested on."""
    from tl.data import made

    if is_made(run.config.dataset):
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
           ("tflite", "float16", "TFLite, float16"), ("tflite", True, "TFLite, 8-bit"),
           ("tflite", "int8", "TFLite, int8 (full integer)"), ("web", False, "Web page (zip)"),
           ("labels", False, "labels.txt"), ("card", False, "Model card (.md)"))


def _export_downloads(run) -> None:
    """Other formats: a Build button, then (in its place) a download. Builds are kept in the
    run's exports/ folder, so reruns and other sessions download without converting again."""
    from tl import export

    st.markdown("**Export** (the TFLite models take a uint8 RGB image of any size and resize it to "
                f"{run.config.image_size}x{run.config.image_size} inside; float16 about 2x smaller, 8-bit "
                "weights about 4x; int8 is full integer; measure them below before choosing; see the model card. "
                "Web page: a static page that runs the model in any browser, a phone's included, with no server; "
                "its README says how to host it)")
    columns = st.columns(3)
    for n, (fmt, quantize, label) in enumerate(EXPORTS):
        column = columns[n % 3]
        key = f"{fmt}{export.SUFFIX[export.variant(quantize)].replace('-', '_')}_{run.id}"
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
