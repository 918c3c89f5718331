"""Classify many photos at once: a zip or a folder of photos in, a table out (thumbnail, file,
top class, calibrated confidence, "none of my classes"), filtered by class and by unknown, with
the CSV and a zip sorted into class folders to download, and the unreadable photos listed.

A few dozen photos are classified in the page with a progress bar; more run in a process of
their own (:mod:`tl.batch_jobs`) with progress and Stop. Either way the result is kept in the
run's folder under the upload's digest, so a reload (or another session) finds it again.
"""

import streamlit as st

from tl import background, batch_jobs
from tl.errors import UserError
from tl.images import IMAGE_EXTENSIONS
from tl.text import shown
from ui.classify_view import _literal
from ui.state import compute_lock, live_progress, load_predictor

BATCH_TYPES = [ext.lstrip(".") for ext in IMAGE_EXTENSIONS] + ["zip"]
ALL_CLASSES = "All classes"


def upload(label: str = "A zip or a folder of photos", key: str = "classify_batch_files",
           help: str = "One .zip of photos (any folders inside), or select every photo of a folder at once. Each "
                       "photo gets one row; the table, a CSV and a zip sorted into class folders come out."):
    """The zip's bytes, or the ``(name, bytes)`` of the photos, or ``None``; a sentence
    (shown by the caller) when a zip comes with other files."""
    files = st.file_uploader(label, type=BATCH_TYPES, accept_multiple_files=True, key=key, help=help)
    if not files:
        return None
    zips = [f for f in files if f.name.lower().endswith(".zip")]
    if zips and len(files) > 1:
        raise UserError("Upload one zip, or photos, not both; remove the other files and try again.")
    return zips[0].getvalue() if zips else [(f.name, f.getvalue()) for f in files]


def batch_section(root: str, run, pass_rate: float | None) -> None:
    """The whole "many photos" part of Classify for ``run`` at the strictness ``pass_rate``."""
    try:
        source = upload()
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    if source is None:
        st.caption(f"Up to {batch_jobs.INLINE_MAX} photos are classified right here; more run in the background "
                   "(you can leave the page and come back).")
        return
    job = batch_jobs.find(run, batch_jobs.upload_key(batch_jobs.digest_of(source), pass_rate))
    status = job.status()
    if status["status"] in background.ACTIVE:
        _progress(job)
        return
    if status["status"] == "done" and job.rows() is not None:
        results(job, run)
        _teach(root, run, job, source)
        return
    if status["status"] in ("failed", "cancelled", "done"):
        st.warning(status.get("reason") or "The result cannot be read; classify again.", icon=":material/warning:")
        if not st.button("Classify again", key="classify_batch_again", icon=":material/replay:"):
            return
    try:
        _classify(root, run, job, source, pass_rate)
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    st.rerun()


def _classify(root: str, run, job, source, pass_rate) -> None:
    """Store the photos, then classify them here (a few) or start the background job."""
    from tl import run_cost

    job, total = batch_jobs.prepare(run, job.path.name, source)
    if total > batch_jobs.INLINE_MAX:
        backbone = run.config.backbone
        batch_jobs.start(job, pass_rate, total, run_cost.TENSORFLOW_MB + run_cost.predictor_mb(backbone))
        return
    try:
        predictor = load_predictor(root, run.id)
    except BaseException:
        batch_jobs.discard(job)
        raise
    bar = st.progress(0.0, text=f"Classifying {total} photos...")

    def on_progress(done, total):
        bar.progress(done / max(total, 1), text=f"{done} of {total} photos classified.")

    with compute_lock("predict"):
        batch_jobs.classify_here(job, predictor, pass_rate, on_progress=on_progress)


def _progress(job) -> None:
    live_progress(job, background.ACTIVE, "Classifying in the background", "classify_batch_stop")


# -- the result ----------------------------------------------------------------------------

def results(job, run) -> None:
    """The table with its filters, the two downloads, and the unreadable photos."""
    import pandas as pd

    rows = job.rows()
    good = [row for row in rows if not row.get("error")]
    bad = [row for row in rows if row.get("error")]
    judged = any(row.get("unknown") is not None for row in good)
    outsiders = sum(bool(row.get("unknown")) for row in good)
    st.success(f"{len(good)} photos classified" + (f", {outsiders} look like none of the classes" if judged else "")
               + (f"; {len(bad)} could not be read (listed below)." if bad else "."), icon=":material/table_view:")
    classes = sorted({row["class"] for row in good})
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    picked = left.multiselect("Classes shown", classes, key="classify_table_classes", placeholder=ALL_CLASSES)
    only_unknown = right.toggle("Only \"none of my classes\"", key="classify_table_unknown", disabled=not judged,
                                help=None if judged else "This run keeps no rule for photos of none of its classes.")
    shown_rows = [row for row in good if (not picked or row["class"] in picked)
                  and (not only_unknown or row.get("unknown"))]
    table = pd.DataFrame({"Photo": [row.get("thumb") for row in shown_rows],
                          "File": [row["file"] for row in shown_rows],
                          "Class": [row["class"] for row in shown_rows],
                          "Confidence": [row["confidence"] for row in shown_rows]})
    columns = {"Photo": st.column_config.ImageColumn("Photo", width="small"),
               "File": st.column_config.TextColumn("File"),
               "Class": st.column_config.TextColumn("Class"),
               "Confidence": st.column_config.ProgressColumn("Confidence", format="percent", min_value=0.0,
                                                             max_value=1.0, width="small")}
    if judged:
        table["None of my classes"] = [bool(row.get("unknown")) for row in shown_rows]
        columns["None of my classes"] = st.column_config.CheckboxColumn("None of my classes", width="small")
    st.caption(f"Showing {len(shown_rows)} of {len(good)} photos. Confidence is calibrated on the run's "
               "validation photos where it could be.")
    st.dataframe(table, column_config=columns, hide_index=True, row_height=56, key="classify_table",
                 width="stretch")
    with st.container(horizontal=True, gap="small", key="classify_downloads"):
        st.download_button("Download the answers (CSV)", data=(job.path / "answers.csv").read_bytes(),
                           file_name=f"answers-{run.id}.csv", mime="text/csv", key="classify_csv",
                           icon=":material/download:", on_click="ignore")
        st.download_button("Download the photos sorted into class folders (zip)",
                           data=lambda: (job.path / "sorted.zip").read_bytes(),
                           file_name=f"sorted-{run.id}.zip", mime="application/zip", key="classify_sorted_zip",
                           icon=":material/folder_zip:", on_click="ignore")
    if bad:
        st.markdown(f"**Could not be read** ({len(bad)})")
        for row in bad:
            st.caption(_literal(f"{shown(row['file'], 120)}: {shown(row['error'], 300)}"))


def _teach(root: str, run, job, source) -> None:
    """For a run on a made dataset: any photo of the table into a class ("Add to class", the
    run's answer chosen first), read again from the upload still in the page."""
    from ui.teach_view import add_to_class, made_dataset, show_flash

    dataset = made_dataset(run, root)
    good = [row for row in job.rows() if not row.get("error")]
    if dataset is None or not good:
        return
    with st.expander("Add a photo of this table to the dataset", icon=":material/add_photo_alternate:",
                     expanded=st.session_state.get("teach_flash") is not None):
        show_flash()
        names = [row["file"] for row in good]
        name = st.selectbox("Photo", names, key="classify_table_pick",
                            format_func=lambda n: f"{shown(n, 80)} ({next(r['class'] for r in good if r['file'] == n)})")
        row = good[names.index(name)]
        data = _photo_bytes(source, name)
        if data is None:
            st.caption("This photo cannot be read from the upload any more; upload it on its own to add it.")
            return
        st.image(data, width=160)
        add_to_class(dataset, row["class"], "table", name, data)


def _photo_bytes(source, name: str) -> bytes | None:
    """The bytes of the photo called ``name`` (as in the table) in the upload: one of the
    files, or an entry of the zip (read directly, not extracted)."""
    import io
    import zipfile

    from tl.data import made

    if isinstance(source, list):
        return next((data for file, data in source if file == name), None)
    try:
        with zipfile.ZipFile(io.BytesIO(source)) as archive:
            info = archive.getinfo(name)
            return archive.read(info) if info.file_size <= made.LIMITS.max_photo_bytes else None
    except (KeyError, zipfile.BadZipFile, OSError, ValueError):
        return None
