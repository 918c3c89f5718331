"""Train: choose a dataset, backbone, strategy and head; train in the background; results.

The Train button and the run on screen (live progress, or its results) come first, the
settings below them; the settings always describe the run on screen (see
``ui.train_form.follow_run``), so Train trains it again unless something was changed.
"""

import streamlit as st

from tl.errors import UserError
from tl.strategies import weights_warning
from ui import owner
from ui.check_view import check_section
from ui.results_view import results
from ui.run_view import dataset_preview, estimate_caption, live_progress, runs_list
from ui.state import current_run, data_key, job_manager, load_data, runs_dir, show_run
from ui.train_form import config_form, mark_followed, same_settings, settings_line, twin_of

st.title("Train")
root = runs_dir()
try:
    manager = job_manager(root)
except UserError as exc:  # the runs folder is read-only, a file, ...
    st.error(str(exc))
    st.stop()

run = current_run(root)
top = st.container(key="train_top")  # filled once the settings below are read
run_area = st.container(key="run_area")  # the run on screen; browser tests find it by key
st.divider()
st.subheader("Settings")
cfg = config_form(root, run)
preview_area = st.container()  # filled last: reading images is the slow part


def submit(cfg) -> None:
    try:
        new = manager.submit(cfg, data=load_data(data_key(cfg)), owner=owner.digest())  # the preview's copy
    except UserError as exc:
        top.error(str(exc))
    else:
        show_run(new.id)
        mark_followed(new.id)
        st.session_state.pop("train_confirm", None)
        st.rerun()  # the new run on screen, at the top


with top:
    if cfg is None:
        st.caption("Finish the settings below to train.")
    else:
        st.caption(settings_line(cfg))
        warning = weights_warning(cfg.strategy, cfg.backbone, cfg.weights)
        if warning:
            st.warning(warning, icon=":material/warning:")
        estimate_caption(cfg)
        twin = twin_of(cfg, root)  # a run with exactly these settings, queued or training
        again = run is not None and same_settings(run, cfg)
        if twin and st.session_state.get("train_confirm") == twin:
            st.warning(f"Run {twin} with exactly these settings is already queued or training. "
                       "Queue another copy?", icon=":material/content_copy:")
            yes, no = st.columns(2)
            if yes.button("Yes, queue a copy", key="train_confirm_yes", type="primary"):
                submit(cfg)
            if no.button("No, keep one", key="train_confirm_no"):
                st.session_state.pop("train_confirm", None)
                st.rerun()
        elif st.button("Train again with these settings" if again else "Train", key="train_start", type="primary"):
            if twin:
                st.session_state["train_confirm"] = twin
                st.rerun()
            submit(cfg)

with run_area:
    if run is not None:
        if run.status()["status"] in ("queued", "running"):
            live_progress(run, manager)
        else:
            results(run)

if cfg is not None:
    with preview_area, st.expander("Dataset preview", expanded=run is None):
        dataset_preview(cfg)
    with preview_area, st.expander("Check my data"):
        check_section(cfg, root)

st.divider()
runs_list(root, manager)
