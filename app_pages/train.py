"""Train: choose a dataset, backbone, strategy and head; train in the background; results."""

import streamlit as st

from tl.errors import UserError
from ui.run_view import dataset_preview, estimate_caption, live_progress, results, runs_list
from ui.state import current_run, data_key, job_manager, load_data, runs_dir, show_run
from ui.train_form import config_form

st.title("Train")
root = runs_dir()
try:
    manager = job_manager(root)
except UserError as exc:  # the runs folder is read-only, a file, ...
    st.error(str(exc))
    st.stop()

cfg = config_form(root)
if cfg is not None:
    with st.expander("Dataset preview", expanded=True):
        dataset_preview(cfg)
    estimate_caption(cfg)
    if st.button("Train", key="train_start", type="primary"):
        try:
            run = manager.submit(cfg, data=load_data(data_key(cfg)))  # the preview's copy
        except UserError as exc:
            st.error(str(exc))
        else:
            show_run(run.id)

run = current_run(root)
if run is not None:
    if run.status()["status"] in ("queued", "running"):
        live_progress(run, manager)
    else:
        results(run)
st.divider()
runs_list(root, manager)
