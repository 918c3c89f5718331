"""Which photos to add next, on Classify: a pool of unlabeled photos (files or a zip) for a run
trained on a made dataset, ranked by how much each would teach it (:mod:`tl.suggest`), the top
ones shown with one button per class that adds the photo to the dataset (:mod:`ui.teach_view`).

The pool is stored under the data root and counts towards its disk cap (:mod:`tl.pool_jobs`):
a few dozen photos are ranked in the page, more in a process of their own with progress and
Stop. Either way the ranking is found again after a reload, with no upload at all.
"""

import streamlit as st

from tl import batch_jobs, pool_jobs
from tl.background import ACTIVE
from tl.errors import UserError
from tl.owners import dataset_owner
from tl.text import shown
from ui import owner
from ui.batch_view import upload
from ui.classify_view import _literal
from ui.state import compute_lock, live_progress, load_predictor
from ui.teach_view import _add, show_flash, update_button

SHOWN = 12  # suggestions shown at a time
FORGOTTEN = "teach_pool_forgotten"  # the pool this session forgot (its files may still be in the uploader)


def pool_section(run, root: str, dataset, pass_rate: float | None) -> None:
    """Upload a pool (or find the last one of ``run``); rank it; the best first, each with one
    button per class."""
    show_flash()
    st.caption("Photos the model has not seen, not yet labelled: the ones it is least sure of, or that look like "
               "none of its classes, come first, and near-copies are spread out. One tap adds a photo to "
               f"'{shown(dataset.name, 40)}'; then update the model.")
    source = upload("Unlabeled photos", "teach_pool_files",
                    f"Up to {pool_jobs.LIMIT:,} photos, or one zip of them. They are kept on the server (within its "
                    "storage limit) until you forget them or room is needed.")
    if source is None:
        job = pool_jobs.latest(run, root)
        if job is None:
            st.caption(f"Up to {batch_jobs.INLINE_MAX} photos are ranked right here; more in the background (you "
                       "can leave the page and come back).")
            update_button(run, root, dataset, "teach_update_pool")
            return
        st.caption("The last pool uploaded for this run:")
    else:
        key = batch_jobs.upload_key(batch_jobs.digest_of(source), pass_rate)
        job = pool_jobs.find(run, key, root)
        if st.session_state.get(FORGOTTEN) == job.path.name:  # still in the uploader after "Forget"
            st.caption("This pool was forgotten. Remove its files above to upload another, or rank it again.")
            if not st.button("Rank again", key="teach_pool_again", icon=":material/replay:"):
                update_button(run, root, dataset, "teach_update_pool")
                return
            st.session_state.pop(FORGOTTEN)
    status = job.status()
    if status["status"] in ACTIVE:
        live_progress(job, ACTIVE, "Ranking in the background", "teach_pool_stop")
        return
    ranking = job.ranking() if status["status"] == "done" else None
    if ranking is None:
        if status["status"] is not None:
            st.warning(status.get("reason") or "The ranking cannot be read; rank again.", icon=":material/warning:")
        if source is None or (status["status"] is not None
                              and not st.button("Rank again", key="teach_pool_again", icon=":material/replay:")):
            update_button(run, root, dataset, "teach_update_pool")
            return
        _rank(root, run, key, source, pass_rate)
        st.rerun()
    touched = st.session_state.setdefault("teach_pool_touched", set())
    if job.path.name not in touched:  # used now, for the disk cap's oldest-first: once a session, not every rerun
        job.touch()
        touched.add(job.path.name)
    _suggestions(job, ranking, dataset)
    if st.button("Forget this pool", key="teach_pool_forget", icon=":material/delete:",
                 help="Removes the pool's photos from the server; photos already added stay in the dataset."):
        pool_jobs.discard(job)
        st.session_state[FORGOTTEN] = job.path.name
        st.rerun()
    update_button(run, root, dataset, "teach_update_pool")


def _rank(root: str, run, key: str, source, pass_rate) -> None:
    """Store the pool, then rank it here (a few photos) or start the background job."""
    from tl import run_cost

    job, total = pool_jobs.prepare(run, key, source, root)
    if total > batch_jobs.INLINE_MAX:
        pool_jobs.start(job, pass_rate, total, run_cost.TENSORFLOW_MB + run_cost.predictor_mb(run.config.backbone))
        return
    try:
        predictor = load_predictor(root, run.id)
    except BaseException:
        pool_jobs.discard(job)
        raise
    bar = st.progress(0.0, text=f"Ranking {total} photos...")
    with compute_lock("predict"):
        pool_jobs.rank_here(job, predictor, pass_rate,
                            on_progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                         text=f"Ranking: {done} of {total}"))


def _suggestions(job, ranking, dataset) -> None:
    added = set(job.added())
    for file, reason in ranking.unreadable:
        st.caption(f"Not ranked: {reason}")
    left = [s for s in ranking.suggestions if s.file not in added]
    st.caption(f"{len(ranking.suggestions)} photo(s) ranked in {ranking.seconds:.1f} s; {len(added)} added, "
               f"{len(left)} left. The first {min(SHOWN, len(left))}:")
    refused = owner.refusal(dataset_owner(dataset), "change")
    classes = list(dataset.counts())
    for place, item in enumerate(left[:SHOWN]):
        try:
            data = job.photo(item.file)
        except UserError as exc:
            st.caption(str(exc))
            continue
        with st.container(border=True, key=f"teach_pool_{place}"):
            picture, text = st.columns([1, 3])
            picture.image(data, width="stretch")
            text.markdown(f"**{item.rank}. {_literal(shown(item.file, 60))}**: {_literal(item.why())}")
            buttons = text.columns(min(len(classes), 4))
            for c, class_name in enumerate(classes):
                if buttons[c % len(buttons)].button(shown(class_name, 30), key=f"teach_pool_add_{place}_{c}",
                                                    type="primary" if class_name == item.guess else "secondary",
                                                    disabled=refused is not None, help=refused, width="stretch"):
                    if _add(dataset, class_name, False, item.file, data):
                        job.mark_added(item.file)
                    st.rerun()
