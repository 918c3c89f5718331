"""The Classify page's pieces: the cached answers of both heads and Grad-CAM for one upload,
the camera and the uploader, how strict "none of my classes" is, one image's answers, and the
run chooser's label and address."""

import hashlib

import numpy as np
import streamlit as st

from tl import plots
from tl.images import IMAGE_EXTENSIONS
from tl.memory import cache_limit_mb
from tl.novelty import FILE as NOVELTY_FILE
from tl.novelty import STRICTNESS
from tl.text import shown
from ui.state import PLOTLY_CONFIG, compute_lock

UPLOAD_TYPES = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS]
DISPLAY_SIDE = 768
# Each cached answer holds a display copy of at most 768x768x3 bytes (1.7 MB) and the top-10s:
# 2% of the app's memory budget for each of the two caches below, at least 8 answers.
ANSWERS = int(min(64, max(8, cache_limit_mb(0.02, 128) / 2)))
NAMED_CLASSES = 5  # an "unknown" warning names the run's classes when it has at most this many
STRICTNESS_HELP = ("How far from this run's training photos (or how much less sure of it than of its own "
                   "classes' photos) a photo may be before it counts as none of its classes. Relaxed lets 99% "
                   "of your classes' own photos through, Balanced 95%, Strict 90%: stricter flags more "
                   "photos, including some of your classes' own. Changing it does not run the model again.")


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


@st.cache_data(show_spinner="Computing where the heads look...", max_entries=ANSWERS)
def explain(root: str, run_id: str, digest: str, name: str, heads: tuple, _data: bytes, _predictor):
    """``{head: (Grad-CAM of its top class blended over the display-sized copy, method)}`` for
    each of ``heads``, from one backbone pass where they share it (both maps of a photo in
    one call: a toggle answers when every map is drawn)."""
    from tl.gradcam import overlay, resize_map

    image = _decode(name, _data)
    with compute_lock("explain"):
        maps = _predictor.grad_cams(image, heads)
    shown = _shrink(image)
    return {head: (overlay(shown, resize_map(heat.values, *shown.shape[:2])), heat.method)
            for head, heat in maps.items()}


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


def strictness(run) -> float | None:
    """The share of in-class photos that pass "none of my classes" (:data:`tl.novelty.STRICTNESS`),
    as the user chose it; ``None``, and no control, when the run keeps no rule."""
    if not (run.path / NOVELTY_FILE).is_file():
        return None
    chosen = st.segmented_control("Flag photos of none of my classes", list(STRICTNESS), default="balanced",
                                  required=True, format_func=str.capitalize, key="classify_strictness",
                                  help=STRICTNESS_HELP)
    return STRICTNESS[chosen or "balanced"]


def outsider_warning(class_names: list) -> str:
    """What a photo judged "none of my classes" says above its answers."""
    count = len(class_names)
    which = f"the {count} classes this run was trained on"
    if count <= NAMED_CLASSES:
        which += " (" + ", ".join(_literal(shown(name, 40)) for name in class_names) + ")"
    return (f"This looks like none of {which}. The guesses below are what the model would answer anyway. "
            "To flag fewer or more photos, change \"Flag photos of none of my classes\" above.")


def _literal(text: str) -> str:
    """``text`` shown literally in markdown."""
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~$" else c for c in text)


def show_answers(root: str, run_id: str, predictor, index: int, name: str, data: bytes, k: int, heat: bool,
                 pass_rate: float | None = None, below=None) -> None:
    """One photo's answers: "none of my classes" above them when the run judges so at
    ``pass_rate`` (decided again from the cached answer: a new strictness runs no model);
    ``below(result)`` draws more in the photo's box (e.g. "Add to class")."""
    digest = hashlib.sha256(data).hexdigest()
    found, error = classify(root, run_id, digest, name, data, predictor)
    if error:
        st.error(error, icon=":material/broken_image:")
        return
    shown_image, (height, width), result = found
    result = predictor.judge(result, pass_rate)
    with st.container(border=True, key=f"classify_photo_{index}"):
        if result.unknown:
            with st.container(key=f"classify_unknown_{index}"):
                st.warning(outsider_warning(predictor.class_names), icon=":material/help:")
        picture, left, right = st.columns([1, 2, 2])
        picture.image(shown_image, caption=f"{name} ({width}x{height})", width="stretch")
        if result.shared:
            picture.caption(f"One backbone pass for both heads: {result.backbone_seconds * 1000:.0f} ms.")
        columns = ((left, "imagenet", result.imagenet, f"ImageNet head ({predictor.cfg.backbone})"),
                   (right, "transfer", result.transfer, "Transferred head (your classes)"))
        drawn = tuple(head for _, head, answer, _ in columns if answer is not None)
        maps = explain(root, run_id, digest, name, drawn, data, predictor) if heat and drawn else {}
        for column, head, answer, title in columns:
            with column:
                if answer is None:
                    st.markdown(f"**{title}**")
                    st.info(result.imagenet_reason, icon=":material/info:")
                    continue
                st.plotly_chart(plots.top_k(answer.labels[:k], answer.scores[:k], title, answer.seconds),
                                key=f"cls_{head}_{index}", config=PLOTLY_CONFIG)
                if heat:
                    blended, method = maps[head]
                    how = ("Grad-CAM" if method == "grad-cam" else "Saliency (the feature map is a single "
                           "cell at this input size, so Grad-CAM has nothing to weigh)")
                    st.image(blended, caption=f"{how}: where it looks for '{answer.labels[0]}'", width="stretch")
        if below is not None:
            below(result)


def remember_choice() -> None:
    # Only a choice the user makes goes into the address: each change of it is a step in the
    # browser's history, and a default written there would take two Backs to leave the page.
    st.query_params["run"] = st.session_state["classify_run"]
