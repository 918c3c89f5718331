"""Classify: upload photos and see the backbone's ImageNet head beside the run's own head."""

import streamlit as st

from tl import runs
from tl.errors import UserError
from ui.batch_view import batch_section
from ui.classify_view import inputs, remember_choice, run_label, show_answers, strictness
from ui.state import load_predictor, runs_dir
from ui.pool_view import pool_section
from ui.teach_view import adder, made_dataset, show_flash, update_button

MODES = {"photos": "Photos one by one", "batch": "A zip or a folder of photos", "suggest": "Photos to add next"}

st.title("Classify")
st.markdown("Upload photos and compare what the backbone's original **ImageNet classifier** sees "
            "with what **your transferred head** predicts.")
root = runs_dir()
listed = {run.id: run for run in runs.list_runs(root)}
finished = {row["run_id"]: row for row in (run.summary() for run in listed.values()) if row["status"] == "done"}
if not finished:
    st.info("No finished run yet: train one on the Train page first.", icon=":material/info:")
    st.page_link("app_pages/train.py", label="Open Train", icon=":material/model_training:")
    st.stop()

ids = list(finished)
wanted = st.query_params.get("run")
if wanted and wanted not in ids:
    st.warning(f"There is no finished run '{wanted}' in {root}; showing the newest finished run instead.",
               icon=":material/link_off:")

run_id = st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0,
                      format_func=lambda rid: run_label(finished[rid]), key="classify_run",
                      on_change=remember_choice)
pass_rate = strictness(listed[run_id])
dataset = made_dataset(listed[run_id], root)  # a made dataset: answers can go back into it
modes = [m for m in MODES if m != "suggest" or dataset is not None]  # adding needs a made dataset
mode = st.segmented_control("Classify", modes, default="photos", required=True, format_func=MODES.get,
                            key="classify_mode", label_visibility="collapsed")
if mode == "batch":
    batch_section(root, listed[run_id], pass_rate)
    st.stop()
if mode == "suggest":
    try:
        pool_section(listed[run_id], root, dataset, pass_rate)
    except UserError as exc:
        st.error(str(exc), icon=":material/error:")
    st.stop()
left, right = st.columns(2)
k = left.slider("Classes to show per head (top-k)", 1, 10, 5, key="classify_k")
heat = right.toggle("Show where each head looks (Grad-CAM)", key="classify_gradcam")
items = inputs()
if not items:
    st.caption("Upload one or more images to classify them.")
    if dataset is not None:
        update_button(listed[run_id], root, dataset, "teach_update_classify")
    st.stop()
try:
    predictor = load_predictor(root, run_id)
except UserError as exc:
    st.error(str(exc))
    st.stop()
engine = predictor.engine
st.caption(f"Backbone on {'OpenVINO' if engine.engine == 'openvino' else 'TensorFlow'} ({engine.precision})."
           + (f" {predictor.engine_note}" if predictor.engine_note else ""))
if predictor.imagenet_weights is None and predictor.imagenet_reason is None:
    st.warning("The ImageNet head has random weights here (TL_IMAGENET_TOP=random, for offline tests): "
               "its labels are noise.", icon=":material/warning:")
if predictor.trust_note:
    st.info(predictor.trust_note, icon=":material/info:")
show_flash()
seen = set()
for index, (name, data) in enumerate(items):
    if data in seen:
        st.caption(f"{name}: the same image as one above, skipped.")
        continue
    seen.add(data)
    show_answers(root, run_id, predictor, index, name, data, k, heat, pass_rate,
                 below=adder(dataset, index, name, data))
if dataset is not None:
    update_button(listed[run_id], root, dataset, "teach_update_classify")
