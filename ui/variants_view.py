"""Smaller models, measured before download: the exports section's table of TFLite variants.

A button measures every variant of the run in a process of its own (:mod:`tl.variants`:
progress and Stop while it runs, found again after a reload or in another session), then a
table (size, test accuracy, top-1 agreement with the Keras model, worst class drop, CPU ms
per photo), a warning per variant that loses more than 2 points, and the recommended one.
"""

import streamlit as st

from tl.errors import UserError
from ui.state import live_progress

LABELS = {"keras": "Keras (.keras)", "float32": "TFLite float32", "float16": "TFLite float16",
          "dynamic": "TFLite 8-bit weights (dynamic)", "int8": "TFLite int8 (full integer)"}


def variants_section(run) -> None:
    """The measurement of ``run``'s variants: start it, follow it, or show its table."""
    from tl import variants

    job = variants.find(run)
    status = job.status() if job else {"status": None}
    st.markdown("**Smaller models, measured before download**")
    if status["status"] in variants.ACTIVE:
        _progress(job, run.id)
        return
    if status["status"] == "done" and job.result() is not None:
        _table(job.result())
    elif status["status"] in ("failed", "cancelled"):
        st.warning(status.get("reason") or "The measurement did not finish; start it again.", icon=":material/warning:")
    found = variants.estimate(run)
    st.caption("Quantised files are smaller and can be less accurate: each variant is converted and run on this "
               f"run's test photos. {found.describe()}.")
    label = "Measure again" if status["status"] == "done" else "Measure the smaller models"
    if st.button(label, key=f"variants_start_{run.id}", icon=":material/straighten:"):
        try:
            variants.start(run)
        except UserError as exc:
            st.error(str(exc))
        else:
            st.rerun()


def _table(result: dict) -> None:
    rows = [{"model": LABELS.get(row["variant"], row["variant"]), "size (MB)": round(row["bytes"] / 1e6, 2),
             "test accuracy": f"{row['accuracy']:.1%}", "top-1 agreement": f"{row['agreement']:.1%}",
             "worst class drop (points)": round(100 * row["worst_drop"], 1), "ms per photo (CPU)": round(row["ms"], 1)}
            for row in result["rows"]]
    st.dataframe(rows, hide_index=True, width="stretch")
    for sentence in result["warnings"]:
        st.warning(sentence, icon=":material/warning:")
    st.success(f"Recommended: {LABELS.get(result['recommended'], result['recommended'])}, the smallest file within "
               f"2 points of the Keras model's test accuracy (measured on {result['photos']} test photos).",
               icon=":material/recommend:")


def _progress(job, run_id: str) -> None:
    from tl import variants

    live_progress(job, variants.ACTIVE, "Measuring", f"variants_stop_{run_id}")
