"""The Classify page's pieces: the cached answers of both heads and Grad-CAM for one upload,
the camera and the uploader, one image's answers, and the run chooser's label and address."""

import hashlib

import numpy as np
import streamlit as st

from tl import plots
from tl.images import IMAGE_EXTENSIONS
from tl.memory import cache_limit_mb
from ui.state import PLOTLY_CONFIG, compute_lock

UPLOAD_TYPES = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]
DISPLAY_SIDE = 768
# Each cached answer holds a display copy of at most 768x768x3 bytes (1.7 MB) and the top-10s:
# 2% of the app's memory budget for each of the two caches below, at least 8 answers.
ANSWERS = int(min(64, max(8, cache_limit_mb(0.02, 128) / 2)))


def run_label(row: dict) -> str:
    accuracy = row["test_accuracy"]
    score = f", test accuracy {accuracy:.1%}" if accuracy is not None else ""
    name = f"{row['name']}: " if row["name"] else ""
    return f"{name}{row['dataset']} · {row['backbone']} · {row['strategy']}{score} ({row['run_id']})"


def _shrink(image, side: int = DISPLAY_SIDE):
    """A copy at most ``side`` pixels wide and high, for the browser (a phone photo would
    otherwise travel to it at full size on every rerun)."""
    from PIL import Image

    if max(image.shape[:2]) <= side:
        return image
    picture = Image.fromarray(image)
    picture.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(picture)


def _decode(name: str, data: bytes):
    from tl.images import decode_image
    from tl.predict import DRAFT_SIZE

    return decode_image(data, name=name, draft_size=DRAFT_SIZE)


@st.cache_data(show_spinner="Classifying...", max_entries=ANSWERS)
def classify(root: str, run_id: str, digest: str, name: str, _data: bytes, _predictor):
    """Decode and classify one upload once per (run, image content): the top-10 of both
    heads (fewer are shown by slicing), a display-sized copy and the original size; or the
    one-sentence reason the file cannot be used. Changing k or toggling Grad-CAM reuses it.
    ``_predictor`` is the run's, loaded by the page (which says why when it cannot be)."""
    from tl.images import ImageError
    from tl.predict import MAX_TOP_K

    try:
        image = _decode(name, _data)
    except ImageError as exc:
        return None, str(exc)
    with compute_lock("predict"):
        result = _predictor.predict(image, MAX_TOP_K)
    return (_shrink(image), image.shape[:2], result), None


@st.cache_data(show_spinner="Computing where the head looks...", max_entries=ANSWERS)
def explain(root: str, run_id: str, digest: str, name: str, head: str, _data: bytes, _predictor):
    """Grad-CAM of ``head``'s top class, blended over the display-sized copy, and its method."""
    from tl.gradcam import overlay, resize_map

    image = _decode(name, _data)
    with compute_lock("explain"):
        heat = _predictor.grad_cam(image, head)
    shown = _shrink(image)
    return overlay(shown, resize_map(heat.values, *shown.shape[:2])), heat.method


def inputs() -> list:
    """``(name, bytes)`` of the camera photo (first: the live answer) and every uploaded file.
    The camera comes before the uploader, so on a phone Take Photo is in the first screen."""
    found = []
    if st.toggle("Test it live with the camera", key="classify_use_camera",
                 help="Point the camera at something and take a photo: both heads answer; take another to try again."):
        photo = st.camera_input("Take a photo to classify", key="classify_camera")
        if photo is not None:
            found.append(("camera photo", photo.getvalue()))
    files = st.file_uploader(
        "Images (JPEG, PNG, WebP, BMP, GIF, TIFF)", type=UPLOAD_TYPES, accept_multiple_files=True,
        key="classify_files", help="Several at once are fine; each is classified on its own.")
    return found + [(f.name, f.getvalue()) for f in files or []]


def show_answers(root: str, run_id: str, predictor, index: int, name: str, data: bytes, k: int, heat: bool) -> None:
    digest = hashlib.sha256(data).hexdigest()
    found, error = classify(root, run_id, digest, name, data, predictor)
    if error:
        st.error(error, icon=":material/broken_image:")
        return
    shown, (height, width), result = found
    with st.container(border=True):
        picture, left, right = st.columns([1, 2, 2])
        picture.image(shown, caption=f"{name} ({width}x{height})", width="stretch")
        if result.shared:
            picture.caption(f"One backbone pass for both heads: {result.backbone_seconds * 1000:.0f} ms.")
        columns = ((left, "imagenet", result.imagenet, f"ImageNet head ({predictor.cfg.backbone})"),
                   (right, "transfer", result.transfer, "Transferred head (your classes)"))
        for column, head, answer, title in columns:
            with column:
                if answer is None:
                    st.markdown(f"**{title}**")
                    st.info(result.imagenet_reason, icon=":material/info:")
                    continue
                st.plotly_chart(plots.top_k(answer.labels[:k], answer.scores[:k], title, answer.seconds),
                                key=f"cls_{head}_{index}", config=PLOTLY_CONFIG)
                if heat:
                    blended, method = explain(root, run_id, digest, name, head, data, predictor)
                    how = ("Grad-CAM" if method == "grad-cam" else "Saliency (the feature map is a single "
                           "cell at this input size, so Grad-CAM has nothing to weigh)")
                    st.image(blended, caption=f"{how}: where it looks for '{answer.labels[0]}'", width="stretch")


def remember_choice() -> None:
    # Only a choice the user makes goes into the address: each change of it is a step in the
    # browser's history, and a default written there would take two Backs to leave the page.
    st.query_params["run"] = st.session_state["classify_run"]
