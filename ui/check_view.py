""""Check my data" for the Train and Data pages: start a check in the background (an
estimate before the click, progress and Stop while it runs), then the likely mislabeled
photos, near-duplicates, outliers, label quality per class and a map of the images.

On a made dataset each suspect has one-click fixes (move to the likely class, remove, or
"this one is right"); for a folder or an uploaded zip, the list to act on and its download.
"""

import csv
import io
from pathlib import Path

import streamlit as st

from tl import check_jobs
from tl.data import made
from tl.data.catalogue import is_made
from tl.errors import UserError
from ui.state import PLOTLY_CONFIG, data_key, live_progress, load_data

SHOWN = 24  # suspects drawn at once
CUTS = {"last": "Last layer (everyday photos)", "earlier": "Earlier layer (scans, drawings, unusual images)"}


def check_config(cfg, cut: str):
    """The check's config from the form's: the same data, split and seed, every image, a
    backbone with ImageNet weights (the form's, else the default)."""
    from tl.backbones import BACKBONES
    from tl.check import check_config as make
    from tl.config import RunConfig

    backbone = cfg.backbone if BACKBONES[cfg.backbone].pretrained else RunConfig.backbone
    if cut == "earlier" and BACKBONES[backbone].earlier_cut is None:
        cut = "last"
    size = max(cfg.image_size, BACKBONES[backbone].min_size)
    return make(cut, dataset=cfg.dataset, data_dir=cfg.data_dir, backbone=backbone, image_size=size, seed=cfg.seed,
                val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, engine=cfg.engine,
                engine_precision=cfg.engine_precision)


def check_section(cfg, root: str) -> None:
    """The Train page's check of the dataset its form names (a download only once it is
    cached: the preview asks for it)."""
    from tl import datasets

    spec = datasets.spec_of(cfg.dataset)
    if spec.downloads and not (spec.download and datasets.is_cached(datasets.DOWNLOADS[spec.download])):
        st.caption(f"Download {cfg.dataset} first (tick the preview above), then check it.")
        return
    dataset = None
    if is_made(cfg.dataset):
        try:
            dataset = made.find(cfg.dataset, root)
        except UserError as exc:
            st.caption(str(exc))
            return
    check_panel(cfg, root, "train", dataset)


def check_panel(cfg, root: str, key: str, dataset=None) -> None:
    """The whole "Check my data" section for the data ``cfg`` names (``dataset``: the made
    dataset on screen, for its one-click fixes)."""
    from tl import run_cost

    st.markdown("Which photos are probably in the wrong class, near-duplicates, outliers, and a map of the "
                "images. Each photo is judged by a head trained without it (5 folds on the backbone's cached "
                "features; 3 or 4 when a class has only that many photos), so a wrong label cannot hide behind "
                "being learnt.")
    cut = st.segmented_control("Features from", list(CUTS), format_func=CUTS.get, default="last",
                               key=f"{key}_check_cut") or "last"
    try:
        check_cfg = check_config(cfg, cut)
        data = load_data(data_key(check_cfg))
    except UserError as exc:
        st.caption(f"Cannot check yet: {exc}")
        return
    job = check_jobs.find(check_cfg, data.fingerprint, root)
    status = job.status() if job else {"status": None}
    if status["status"] in check_jobs.ACTIVE:
        _progress(job, key)
        return
    found = run_cost.estimate(check_cfg, len(data))
    label = "Check again" if status["status"] == "done" else "Check my data"
    st.caption(f"{len(data)} images with {check_cfg.backbone} at {check_cfg.image_size} px. {found.describe()} "
               "(the features are cached: a second check, or training on them, takes seconds).")
    if st.button(label, key=f"{key}_check_start", icon=":material/fact_check:"):
        try:
            check_jobs.start(check_cfg, data.fingerprint, root, about=dataset.id if dataset is not None else None,
                             estimate=found)
        except UserError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    if status["status"] in ("failed", "cancelled"):
        st.warning(status.get("reason") or "The check did not finish; start it again.", icon=":material/warning:")
    if status["status"] == "done":
        result = job.result()
        if result is None:
            st.warning("The check's result cannot be read; check again.", icon=":material/warning:")
        else:
            results(result, cfg, key, dataset)
    elif dataset is not None and status["status"] is None:
        _earlier(dataset, cfg, root, key)


def _earlier(dataset, cfg, root: str, key: str) -> None:
    """After a fix, the dataset's new version has no check yet: the last one stays on
    screen (marked), less the photos already moved, removed or confirmed, so the next fix is
    one click away."""
    job = check_jobs.latest(dataset.id, root)
    result = job.result() if job else None
    if result is None:
        return
    checked = (result.origin or {}).get("version")
    st.info(f"From the check of version {checked}; the dataset is at version {dataset.version} now. Check again to "
            "include every change.", icon=":material/history:")
    current = {p.hash: name for name, photos in dataset.classes.items() for p in photos}
    result.suspects = [s for s in result.suspects if current.get(_hash(s["file"])) == s["label"]]
    results(result, cfg, key, dataset)


def _progress(job, key: str) -> None:
    live_progress(job, check_jobs.ACTIVE, "Checking", f"{key}_check_stop")


# -- results -------------------------------------------------------------------------------

def results(result, cfg, key: str, dataset=None) -> None:
    """What a finished check found; fixes for a made dataset."""
    marks = made.dismissed(dataset) if dataset is not None else {}
    suspects = [s for s in result.suspects if marks.get(_hash(s["file"])) != s["label"]]
    leaks = [d for d in result.duplicates if d.get("leakage")]
    st.success(f"{len(result.images)} images checked: {len(suspects)} likely mislabeled, {len(result.duplicates)} "
               f"near-duplicate pair(s) ({len(leaks)} across the train/validation/test split), "
               f"{len(result.outliers)} outlier(s). Each photo judged without itself: "
               f"{result.accuracy:.0%} agree with their given class.", icon=":material/fact_check:")
    if result.note:
        st.info(result.note, icon=":material/info:")
    st.caption("Label quality per class (share of its photos not suspect): " + " · ".join(
        f"{name} {quality:.0%}" for name, quality in result.label_quality.items()))
    _suspects(result, suspects, cfg, key, dataset)
    _pairs(result, cfg, key, dataset)
    _map(result, cfg, key, dataset)


def _hash(file: str) -> str:
    return Path(file).stem


def _suspects(result, suspects, cfg, key: str, dataset) -> None:
    st.markdown(f"**Likely mislabeled** ({len(suspects)})")
    if not suspects:
        st.caption("None: every photo's given class is also what a head trained without it thinks.")
        return
    if dataset is not None:
        from ui.data_view import changes_refused

        refused = changes_refused(dataset)
        if refused:
            st.caption(f"{refused} Its fixes below are off.")
    with st.container(horizontal=True, gap="small", key=f"{key}_suspects"):
        for n, item in enumerate(suspects[:SHOWN]):
            with st.container(width=150, border=True, gap=None, key=f"{key}_sus_{n}"):
                image = thumbnail(cfg, item["file"], dataset)
                if image is not None:
                    st.image(image, width=120)
                st.caption(f"{item['label']} → **{item['likely']}** ({item['score']:.0%} sure it is wrong)")
                if dataset is not None:
                    _fixes(dataset, item, key, n)
    if len(suspects) > SHOWN:
        st.caption(f"Showing the {SHOWN} most suspicious of {len(suspects)}.")
    if dataset is None:
        st.download_button("Download the list (CSV)", data=_csv(suspects), file_name="suspects.csv",
                           mime="text/csv", key=f"{key}_suspects_csv", icon=":material/download:", on_click="ignore")
        st.caption("Files are relative to the data folder: move each to the class you think is right (or delete it), "
                   "then check again.")


def _fixes(dataset, item, key: str, n: int) -> None:
    from ui.data_view import apply_change, changes_refused

    label, likely, digest = item["label"], item["likely"], _hash(item["file"])
    versioned = " The dataset has a new version; finished runs keep the one they used."
    refused = changes_refused(dataset)  # each fix checks again when clicked (apply_change)
    if st.button(f"Move to {likely}", key=f"{key}_mv_{n}", type="primary", disabled=refused is not None, help=refused):
        apply_change(dataset, lambda: made.move_photo(dataset, label, digest, likely),
                     f"Moved the photo from '{label}' to '{likely}'." + versioned)
    if st.button("Remove", key=f"{key}_rmv_{n}", disabled=refused is not None, help=refused):
        apply_change(dataset, lambda: made.remove_photo(dataset, label, digest),
                     f"Removed the photo from '{label}'." + versioned)
    if st.button("It is right", key=f"{key}_ok_{n}", disabled=refused is not None,
                 help=refused or "Leave it in its class and stop flagging it."):
        # A mark beside the dataset, not a change of it: no new version.
        apply_change(dataset, lambda: made.dismiss(dataset, digest, label),
                     f"Kept the photo in '{label}'; it is not flagged again.")


def _csv(rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["file", "label", "likely", "score"])
    for row in rows:
        writer.writerow([row["file"], row["label"], row["likely"], f"{row['score']:.4f}"])
    return out.getvalue()


def _pairs(result, cfg, key: str, dataset) -> None:
    if result.duplicates:
        with st.expander(f"Near-duplicates ({len(result.duplicates)} pairs)"):
            for pair in result.duplicates[:12]:
                where = ("in different splits: the test score counts it twice (leakage)" if pair.get("leakage")
                         else "in the same class: a wasted photo" if pair.get("same_class")
                         else "in different classes")
                st.caption(f"{pair['files'][0]} and {pair['files'][1]}: similarity {pair['similarity']:.3f}, {where}.")
                row = st.container(horizontal=True)
                for file in pair["files"]:
                    image = thumbnail(cfg, file, dataset)
                    if image is not None:
                        row.image(image, width=96)
    if result.outliers:
        with st.expander(f"Outliers ({len(result.outliers)})"):
            st.caption("Far from every class: another kind of image, or a class of its own.")
            row = st.container(horizontal=True)
            for item in result.outliers[:SHOWN]:
                image = thumbnail(cfg, item["file"], dataset)
                if image is not None:
                    row.image(image, width=96, caption=f"{item['label']}: {Path(item['file']).name}")


def _map(result, cfg, key: str, dataset) -> None:
    from tl import plots

    fig = plots.check_map(result.images, result.class_names, explained=result.map.get("explained"))
    event = st.plotly_chart(fig, key=f"{key}_check_map", on_select="rerun", selection_mode="points",
                            config=PLOTLY_CONFIG)
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    picked = [p.get("customdata") for p in points if p.get("customdata") is not None]
    if picked:
        index = picked[0][0] if isinstance(picked[0], list) else picked[0]
        item = result.images[int(index)]
        image = thumbnail(cfg, item["file"], dataset, side=320)
        if image is not None:
            st.image(image, width=240, caption=f"{item['file']}: given {item['label']}, likely {item.get('likely')}")
    else:
        st.caption("Click a point to see its image.")


def thumbnail(cfg, file: str, dataset=None, side: int = 160):
    """A small copy of a checked image (a made dataset's stored thumbnail, or the file in
    the data folder), or ``None`` when it is gone."""
    if dataset is not None or is_made(cfg.dataset):
        try:
            dataset = dataset or made.find(cfg.dataset)
        except UserError:
            return None
        path = dataset.path / ("thumbs" if side <= made.THUMB_SIDE else "photos") / (
            f"{_hash(file)}.jpg" if side <= made.THUMB_SIDE else Path(file).name)
        return _small(str(path), side)
    if cfg.data_dir:
        return _small(str(Path(cfg.data_dir).expanduser() / file), side)
    return None


@st.cache_data(show_spinner=False, max_entries=512)
def _small(path: str, side: int):
    from tl.images import ImageError, decode_image

    try:
        image = decode_image(path, draft_size=side)
    except ImageError:
        return None
    from PIL import Image

    picture = Image.fromarray(image)
    picture.thumbnail((side, side))
    return picture
