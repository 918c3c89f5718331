"""Classify: upload photos and see the backbone's ImageNet head beside the run's own head."""

import hashlib

import streamlit as st

from tl import plots, runs
from tl.errors import UserError
from tl.images import IMAGE_EXTENSIONS
from ui.state import runs_dir

UPLOAD_TYPES = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]


@st.cache_resource(show_spinner="Loading the run's model and its ImageNet head...", max_entries=2)
def load_predictor(root: str, run_id: str):
    """Both heads of a run, built once per run for the whole server (max two runs held)."""
    from tl.predict import Predictor

    return Predictor(runs.get(run_id, root))


def _run_label(run) -> str:
    cfg = run.config
    accuracy = run.metrics.get("test_accuracy")
    score = f", test accuracy {accuracy:.1%}" if accuracy is not None else ""
    name = f"{cfg.name}: " if cfg.name else ""
    return f"{name}{cfg.dataset} · {cfg.backbone} · {cfg.strategy}{score} ({run.id})"


def _inputs() -> list:
    """``(name, bytes)`` of every uploaded file and the camera photo."""
    files = st.file_uploader(
        "Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", type=UPLOAD_TYPES, accept_multiple_files=True,
        key="classify_files", help="Several at once are fine; each is classified on its own.")
    found = [(f.name, f.getvalue()) for f in files or []]
    if st.toggle("Take a photo with the camera", key="classify_use_camera"):
        photo = st.camera_input("Photo", key="classify_camera")
        if photo is not None:
            found.append(("camera photo", photo.getvalue()))
    return found


def _show(predictor, index: int, name: str, data: bytes, k: int, explain: bool) -> None:
    from tl.gradcam import overlay
    from tl.images import ImageError, decode_image
    from tl.predict import DRAFT_SIZE

    try:
        image = decode_image(data, name=name, draft_size=DRAFT_SIZE)
    except ImageError as exc:
        st.error(str(exc), icon=":material/broken_image:")
        return
    result = predictor.predict(image, k)
    with st.container(border=True):
        picture, left, right = st.columns([1, 2, 2])
        picture.image(image, caption=f"{name} ({image.shape[1]}x{image.shape[0]})", width="stretch")
        if result.shared:
            picture.caption(f"One backbone pass for both heads: {result.backbone_seconds * 1000:.0f} ms.")
        with left:
            if result.imagenet is None:
                st.markdown("**ImageNet head**")
                st.info(result.imagenet_reason, icon=":material/info:")
            else:
                st.plotly_chart(plots.top_k(result.imagenet.labels, result.imagenet.scores,
                                            f"ImageNet head ({predictor.cfg.backbone})",
                                            result.imagenet.seconds), key=f"cls_imagenet_{index}")
                if explain:
                    _heat(predictor, image, "imagenet", result.imagenet.labels[0], overlay)
        with right:
            st.plotly_chart(plots.top_k(result.transfer.labels, result.transfer.scores,
                                        "Transferred head (your classes)", result.transfer.seconds),
                            key=f"cls_transfer_{index}")
            if explain:
                _heat(predictor, image, "transfer", result.transfer.labels[0], overlay)


def _heat(predictor, image, head: str, label: str, overlay) -> None:
    heat = predictor.grad_cam(image, head)
    how = ("Grad-CAM" if heat.method == "grad-cam" else
           "Saliency (the feature map is a single cell at this input size, so Grad-CAM has nothing to weigh)")
    st.image(overlay(image, heat), caption=f"{how}: where it looks for '{label}'", width="stretch")


st.title("Classify")
st.markdown("Upload photos and compare what the backbone's original **ImageNet classifier** sees "
            "with what **your transferred head** predicts.")
root = runs_dir()
finished = [run for run in runs.list_runs(root) if run.status().get("status") == "done"]
if not finished:
    st.info("No finished run yet: train one on the Train page first.", icon=":material/info:")
    st.page_link("app_pages/train.py", label="Open Train", icon=":material/model_training:")
    st.stop()

ids = [run.id for run in finished]
wanted = st.query_params.get("run")
by_id = {run.id: run for run in finished}
run_id = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0,
                      format_func=lambda rid: _run_label(by_id[rid]), key="classify_run")
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id
left, right = st.columns(2)
k = left.slider("Classes to show per head (top-k)", 1, 10, 5, key="classify_k")
explain = right.toggle("Show where each head looks (Grad-CAM)", key="classify_gradcam")
items = _inputs()
if not items:
    st.caption("Upload one or more images to classify them.")
    st.stop()
try:
    predictor = load_predictor(root, run_id)
except UserError as exc:
    st.error(str(exc))
    st.stop()
if predictor.imagenet_weights is None and predictor.imagenet_reason is None:
    st.warning("The ImageNet head has random weights here (TL_IMAGENET_TOP=random, for offline tests): "
               "its labels are noise.", icon=":material/warning:")
seen = set()
for index, (name, data) in enumerate(items):
    digest = hashlib.sha256(data).hexdigest()
    if digest in seen:
        st.caption(f"{name}: the same image as one above, skipped.")
        continue
    seen.add(digest)
    _show(predictor, index, name, data, k, explain)
