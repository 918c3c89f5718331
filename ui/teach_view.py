"""Teach a run what it got wrong: a photo tried on Classify goes into the run's made dataset
("Add to class", the model's guess chosen first), "Update the model" trains the same settings
on the dataset's new version, and an updated run says what changed (:mod:`tl.update`).

Only runs trained on a dataset made in the app have a dataset to add to. The owner rules of
the Data page apply: on a shared app, another visitor's dataset shows the controls disabled
with the reason. The run itself never changes: every addition makes a new dataset version.
"""

import streamlit as st

from tl import update
from tl.data import made
from tl.errors import UserError
from tl.owners import dataset_owner
from tl.text import shown
from ui import owner
from ui.state import job_manager

NEW_CLASS = "A new class..."
FLASH = "teach_flash"


def made_dataset(run, root: str):
    """The made dataset ``run`` trained on, as it is now, or ``None`` (other data, or deleted)."""
    origin = run.data_origin or {}
    if origin.get("kind") != "made" or not origin.get("id"):
        return None
    try:
        return made.find(origin["id"], root)
    except UserError:  # deleted since
        return None


def show_flash() -> None:
    """The outcome of the last "Add to class" or "Update the model" of this session, once."""
    found = st.session_state.pop(FLASH, None)
    if found:
        kind, text = found
        (st.success if kind == "success" else st.warning if kind == "warning" else st.error)(text)


def _flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def add_to_class(dataset, guess: str | None, index: int, name: str, data: bytes) -> None:
    """Under one answer: pick a class (the model's ``guess`` first, any other, or a new one)
    and add the photo to ``dataset`` with the Data page's checks (the same photo twice, in two
    classes, the disk cap)."""
    refused = owner.refusal(dataset_owner(dataset), "change")
    classes = list(dataset.counts())
    options = classes + [NEW_CLASS]
    with st.container(key=f"teach_add_{index}"):
        pick, act = st.columns([3, 2], vertical_alignment="bottom")
        choice = pick.selectbox(f"Add this photo to '{shown(dataset.name, 40)}'", options,
                                index=classes.index(guess) if guess in classes else 0, key=f"teach_class_{index}",
                                disabled=refused is not None, help=refused or "A new version of the dataset; "
                                "the run you are trying stays as it is.")
        new = None
        if choice == NEW_CLASS:
            new = st.text_input("New class name", key=f"teach_new_{index}", max_chars=made.LIMITS.max_name,
                                disabled=refused is not None)
        if act.button("Add to class", key=f"teach_go_{index}", icon=":material/add_photo_alternate:",
                      disabled=refused is not None, help=refused, width="stretch"):
            _add(dataset, new if choice == NEW_CLASS else choice, choice == NEW_CLASS, name, data)
            st.rerun()


def adder(dataset, index: int, name: str, data: bytes):
    """For Classify's ``show_answers(below=...)``: "Add to class" under a photo's answers,
    the transferred head's top class chosen first; ``None`` without a made dataset."""
    if dataset is None:
        return None

    def below(result):
        add_to_class(dataset, result.transfer.labels[0] if result.transfer else None, index, name, data)

    return below


def _add(dataset, class_name: str | None, create: bool, name: str, data: bytes) -> bool:
    """Add one photo (to a new class when ``create``); flash what happened; whether it went in."""
    try:
        owner.require(dataset_owner(dataset), "change")
        if create:
            if not (class_name or "").strip():
                raise UserError("Type a name for the new class first.")
            dataset = made.add_class(dataset, class_name)
            class_name = made.check_name(class_name)
        report = made.add_photos(dataset, class_name, [(name, data)])
    except UserError as exc:
        _flash("error", str(exc))
        return False
    lines = report.messages()
    if report.added:
        _flash("success", f"Added to '{shown(class_name, 60)}': '{shown(report.dataset.name, 60)}' is at version "
                          f"{report.dataset.version} now. Update the model to learn from it.")
    else:
        _flash("warning", " ".join(lines) or "Nothing was added.")
    return bool(report.added)


def update_button(run, root: str, dataset, key: str) -> None:
    """"Update the model": the run's settings trained on its dataset's newest version, then
    Train opens on the new run (which says what changed). Disabled, with why, while the
    dataset has not changed or this session may not train on it."""
    origin = run.data_origin or {}
    problem = None
    if dataset.version <= origin.get("version", 0):
        problem = f"'{shown(dataset.name, 60)}' has not changed since this run trained on it: add photos first."
    elif run.status().get("status") != "done":
        problem = "Only a finished run can be updated."
    if st.button("Update the model", key=key, type="primary", icon=":material/model_training:",
                 disabled=problem is not None, help=problem or f"Train run {run.id}'s settings again on "
                 f"'{shown(dataset.name, 60)}' version {dataset.version} (it trained on version {origin.get('version')})."):
        manager = job_manager(root)
        try:
            new = update.start(run, lambda cfg, data: manager.submit(cfg, data=data, owner=owner.digest()), root)
        except UserError as exc:
            st.error(str(exc))
            return
        st.switch_page("app_pages/train.py", query_params={"run": new.id})
    if problem:
        st.caption(problem)


def what_changed(metrics: dict) -> None:
    """On an updated run's results: the run it updates, the photos added per class, the
    versions, and both runs' scores on the test photos they share."""
    record = metrics.get("update") if isinstance(metrics, dict) else None
    if not isinstance(record, dict) or not record.get("updates"):
        return
    with st.container(border=True, key="teach_changed"):
        st.markdown(f"**What changed since run `{record['updates']}`**")
        if record.get("note") and not record.get("added"):
            st.caption(record["note"])
            return
        added = {c: n for c, n in (record.get("added") or {}).items() if n}
        removed = {c: n for c, n in (record.get("removed") or {}).items() if n}
        parts = [f"the dataset went from version {record.get('version_before')} to {record.get('version_after')}"]
        if added:
            parts.append("added " + ", ".join(f"{n} to '{shown(c, 40)}'" for c, n in added.items()))
        if removed:
            parts.append("removed " + ", ".join(f"{n} from '{shown(c, 40)}'" for c, n in removed.items()))
        st.markdown("; ".join(parts) + ".")
        before, after = record.get("before") or {}, record.get("after") or {}
        if record.get("shared_test_photos") and before.get("test_accuracy") is not None:
            rows = [{"": "test accuracy", "before": f"{before['test_accuracy']:.0%}",
                     "after": f"{after.get('test_accuracy', 0):.0%}"}]
            if before.get("unknown_rate") is not None and after.get("unknown_rate") is not None:
                rows.append({"": "called none of its classes", "before": f"{before['unknown_rate']:.0%}",
                             "after": f"{after['unknown_rate']:.0%}"})
            st.dataframe(rows, hide_index=True, key="teach_changed_table")
            st.caption(f"On the {record['shared_test_photos']} test photo(s) both runs share, for the classes both have.")
        elif record.get("note"):
            st.caption(record["note"])


def update_from_data(dataset, root: str) -> None:
    """On the Data page: "Update the model" for the newest finished run trained on an earlier
    version of ``dataset`` (nothing when no run trained on it)."""
    from tl import runs

    trained = []
    for run_id in made.runs_using(dataset):  # the dataset's refs: no scan of every run folder
        try:
            run = runs.get(run_id, root)
        except UserError:
            continue
        if run.status().get("status") == "done":
            trained.append(run)
    if not trained:
        return
    newest = max(trained, key=lambda run: run.id)  # ids start with their creation time
    st.caption(f"Run `{newest.id}` trained on version {(newest.data_origin or {}).get('version')} of it.")
    update_button(newest, root, dataset, "teach_update_data")
