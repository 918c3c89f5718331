"""Compare: run every strategy on the same split (a sweep), or put finished runs side by side."""

import streamlit as st

from tl.errors import UserError
from ui.compare_view import pick_runs
from ui.state import job_manager, runs_dir
from ui.sweep_view import current_sweep, show_sweep, start_sweep, sweep_estimate, sweep_form, sweep_view

st.title("Compare")
root = runs_dir()
try:
    manager = job_manager(root)
except UserError as exc:  # the runs folder is read-only, a file, ...
    st.error(str(exc))
    st.stop()

mode = st.radio("What to compare", ["Run every strategy (sweep)", "Pick finished runs"], key="compare_mode",
                horizontal=True, label_visibility="collapsed")
if mode.startswith("Run"):
    shown = current_sweep(root)  # first, so the form can follow it
    choices = sweep_form(shown)
    if choices is not None:
        sweep_estimate(*choices)
    if choices is not None and st.button("Run comparison", key="compare_start", type="primary"):
        started = start_sweep(root, manager, *choices)
        if started is not None:
            show_sweep(started.id)
            st.session_state["compare_form_sweep"] = started.id  # the form holds its settings already
            shown = started
    if shown is not None:
        sweep_view(shown, manager)
else:
    pick_runs(root)
