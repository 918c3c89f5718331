"""The Data page's pieces: pick or make a dataset, add photos to a class by upload or
camera, the classes as cards of thumbnails, and what to do with the dataset next.

Laid out for a phone first (390 px): one column, the class picker and the camera or
uploader at the top of the step, thumbnails in wrapping rows. Every change goes through
:mod:`tl.data.made`; its one-sentence refusals are shown as they come.
"""

import streamlit as st

from tl.data import made
from tl.errors import UserError
from tl.owners import dataset_owner
from tl.text import shown
from ui import owner
from ui.teach_view import update_from_data
from ui.state import remember

NEW = "\u0000new"  # the picker's "make a new one" entry; no name can hold a NUL
SHOWN_PER_CLASS = 60  # thumbnails drawn per class before "Show all"
PHOTO_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
EPHEMERAL_NOTE = ("On Streamlit Community Cloud the disk is wiped whenever the app restarts: download the zip "
                  "(the button above) to keep your photos, and start from it again with 'New dataset...'.")


# -- messages that outlive the rerun a change makes ----------------------------------------

def flash(kind: str, text: str) -> None:
    """Show ``text`` after the next rerun (``kind``: success, warning, error, info)."""
    st.session_state.setdefault("data_flash", []).append((kind, text))


def show_flashes() -> None:
    icons = {"success": ":material/check_circle:", "warning": ":material/warning:", "error": ":material/error:",
             "info": ":material/info:"}
    for kind, text in st.session_state.pop("data_flash", []):
        getattr(st, kind)(text, icon=icons[kind])


def _bump(name: str) -> str:
    """A widget key that changes each time ``name`` is bumped (a fresh camera or uploader)."""
    return f"{name}_{st.session_state.get(name, 0)}"


def _next(name: str) -> None:
    st.session_state[name] = st.session_state.get(name, 0) + 1


def _steady(key: str, options) -> None:
    """Keep selectbox ``key`` on its choice while its labels change under it.

    Its labels carry counts ("cat (3)") that change while the option stays chosen, and the
    browser holds on to the label it was last sent: sent back with the next action, that
    label matches no option, and the choice would fall back to another class or dataset
    (photos then land there). So the choice is kept under ``<key>_held`` (see :func:`_hold`),
    read back from there when the value is such a label, and written to the widget on every
    run, which also sends the browser the label with today's count."""
    value = st.session_state.get(key)
    if value not in options:
        value = st.session_state.get(f"{key}_held")
    if value in options:
        st.session_state[key] = value


def _hold(key: str, value) -> None:
    st.session_state[f"{key}_held"] = value


# -- choosing or making a dataset ------------------------------------------------------------

def pick_dataset(root: str):
    """The made dataset on screen (chosen in the picker, or by ``?data=<id>``), or ``None``
    after showing how to make one."""
    every = made.list_datasets(root)
    # On a shared app, the ones this browser made come first (one of them opens first), marked.
    mine = {d.id for d in every if owner.made_here(dataset_owner(d))}
    every.sort(key=lambda d: d.id not in mine)  # stable: by name within each part
    by_id = {d.id: d for d in every}
    opened = st.session_state.pop("data_open", None)  # set by a change that picked one (before the widget)
    if opened is not None:
        st.session_state.pop("data_pick", None)
        st.session_state["data_id"] = opened
    if "data_pick" not in st.session_state:
        wanted = opened if opened is not None else (st.query_params.get("data") or st.session_state.get("data_id"))
        if wanted and wanted not in by_id and opened is None:
            st.warning(f"There is no made dataset '{shown(wanted, 60)}' here (deleted, or a link from another "
                       "machine); pick or make one below.", icon=":material/link_off:")
        st.session_state["data_pick"] = wanted if wanted in by_id else (every[0].id if every else NEW)
    _steady("data_pick", [*by_id, NEW])
    if st.session_state["data_pick"] not in (*by_id, NEW):
        st.session_state["data_pick"] = every[0].id if every else NEW
    options = [*by_id, NEW]
    chosen = st.selectbox("Dataset", options, key="data_pick",
                          format_func=lambda i: "New dataset..." if i == NEW else
                          f"{by_id[i].name} ({by_id[i].photos} photos{', yours' if i in mine else ''})",
                          help="Datasets you make here are kept on this server; Train and Compare offer them.")
    _hold("data_pick", chosen)
    if chosen == NEW:
        show_flashes()  # "Deleted '...'." after a delete, which lands here
        _new_dataset(root)
        return None
    remember("data", chosen)
    return by_id[chosen]


def _new_dataset(root: str) -> None:
    with st.form("data_new", border=True):
        name = st.text_input("Name of the new dataset", key="data_new_name", max_chars=made.LIMITS.max_name,
                             placeholder="e.g. Lucy vs other dogs")
        make = st.form_submit_button("Make dataset", type="primary")
    if make:
        try:
            dataset = made.create_dataset(name, root, owner=owner.digest())
        except UserError as exc:
            st.error(str(exc))
        else:
            _open(dataset.id)
    with st.expander("Or start from a zip of class folders"):
        upload = st.file_uploader("Zip of class folders", type=["zip"], key=_bump("data_zip"),
                                  help="For example photos.zip holding cats/1.jpg and dogs/2.jpg.")
        if upload is not None and st.button("Make dataset from the zip", key="data_zip_go"):
            try:
                with st.spinner("Checking and storing the photos..."):
                    dataset, problems = made.import_zip(name or upload.name.rsplit(".", 1)[0], upload, root,
                                                        owner=owner.digest())
            except UserError as exc:
                st.error(str(exc))
            else:
                for line in problems[:10]:
                    flash("warning", line)
                flash("success", f"Made '{dataset.name}': {dataset.describe()}.")
                _next("data_zip")
                _open(dataset.id)
    st.caption("Or use the Train page's zip or folder upload as it is, without making a dataset.")


def _open(dataset_id: str) -> None:
    """Show ``dataset_id`` ("" for none: the first one) after a rerun; the picker has been
    drawn already, so its value is set on the next run, before it is drawn."""
    st.session_state["data_open"] = dataset_id
    if dataset_id:
        remember("data", dataset_id)
    st.rerun()


# -- adding photos ---------------------------------------------------------------------------

def add_photos(dataset) -> None:
    """Class picker, then the camera or the uploader for that class; advice on counts."""
    classes = list(dataset.classes)
    st.subheader("Add photos")
    refused = changes_refused(dataset)
    if refused:
        show_flashes()
        st.caption(refused)
        return
    if not classes or st.session_state.get("data_adding_class"):
        _new_class(dataset, first=not classes)
        if not classes:
            show_flashes()
            st.caption(made.ADVICE)
            return
    _steady("data_class", classes)
    if st.session_state.get("data_class") not in classes:
        st.session_state["data_class"] = classes[-1]
    # One row even on a phone (columns would stack there), so that the camera's Take Photo
    # is in the first screen of the step.
    with st.container(horizontal=True, vertical_alignment="bottom", wrap=False):
        class_name = st.selectbox("To class", classes, key="data_class",
                                  format_func=lambda n: f"{n} ({len(dataset.classes[n])})")
        _hold("data_class", class_name)
        if st.button("New class", key="data_new_class", icon=":material/add:"):
            st.session_state["data_adding_class"] = True
            st.rerun()
    how = st.segmented_control("How", ["Upload", "Camera"], key="data_how", default="Upload",
                               label_visibility="collapsed") or "Upload"
    if how == "Camera":
        _camera(dataset, class_name)
    else:
        _upload(dataset, class_name)
    show_flashes()  # below the camera or uploader: what the last change did, where the eye is, moving nothing
    _advice(dataset)


def _new_class(dataset, first: bool) -> None:
    with st.form("data_class_form", border=True, clear_on_submit=True):
        name = st.text_input("First class name" if first else "New class name", key="data_class_name",
                             max_chars=made.LIMITS.max_name, placeholder="e.g. Lucy")
        c1, c2 = st.columns(2)
        add = c1.form_submit_button("Add class", type="primary")
        cancel = False if first else c2.form_submit_button("Cancel")
    if cancel:
        st.session_state.pop("data_adding_class", None)
        st.rerun()
    if add:
        try:
            owner.require(dataset_owner(dataset), "change")
            updated = made.add_class(dataset, name)
        except UserError as exc:
            st.error(str(exc))
            return
        st.session_state.pop("data_adding_class", None)
        st.session_state["data_class"] = made.check_name(name)
        flash("success", f"Class '{shown(name.strip(), 60)}' added to '{updated.name}'; now add its photos.")
        st.rerun()


def _store(dataset, class_name: str, files) -> None:
    """Add ``files`` to the class, flash what happened, and rerun with a fresh widget."""
    try:
        owner.require(dataset_owner(dataset), "change")
        with st.spinner("Checking and storing..."):
            report = made.add_photos(dataset, class_name, files)
    except UserError as exc:
        flash("error", str(exc))
        return
    for line in report.messages():
        flash("warning", line)
    if report.added:
        flash("success", f"{report.describe()} '{class_name}' has {report.dataset.counts()[class_name]} now.")


def _camera(dataset, class_name: str) -> None:
    """Each photo taken is kept in the chosen class; the camera then starts afresh (a new
    key), so every tap adds one photo and the class stays chosen."""
    photo = st.camera_input(f"Take a photo for '{class_name}'", key=_bump("data_camera"),
                            help="Each photo you take is added to the class; take several from different angles.")
    if photo is not None:
        _store(dataset, class_name, [(f"camera photo {dataset.counts()[class_name] + 1}", photo.getvalue())])
        _next("data_camera")
        st.rerun()


def _upload(dataset, class_name: str) -> None:
    files = st.file_uploader(f"Photos for '{class_name}'", type=PHOTO_TYPES, accept_multiple_files=True,
                             key=_bump("data_upload"), help="Pick several at once; each is checked on the way in.")
    if files:
        _store(dataset, class_name, files)
        _next("data_upload")
        st.rerun()


def _advice(dataset) -> None:
    counts = dataset.counts()
    short = {n: c for n, c in counts.items() if c < made.MIN_PER_CLASS}
    if len(counts) < 2:
        st.info("Add a second class: a classifier tells at least two apart.", icon=":material/info:")
    elif short:
        st.info("Before training, " + ", ".join(f"'{n}' needs {made.MIN_PER_CLASS - c} more" for n, c in short.items())
                + f" (at least {made.MIN_PER_CLASS} photos per class).", icon=":material/info:")
    st.caption(made.ADVICE)


# -- the classes -------------------------------------------------------------------------

def classes(dataset) -> None:
    """One card per class: its count, its thumbnails (each removable), and rename, merge
    or delete."""
    if not dataset.classes:
        return
    st.subheader("Classes")
    for index, (name, photos) in enumerate(dataset.classes.items()):
        with st.container(border=True, key=f"data_card_{index}"):
            st.markdown(f"**{_escape(name)}** · {len(photos)} photo(s)")
            _thumbnails(dataset, name, photos, index)
            _class_actions(dataset, name, index)


def _escape(text: str) -> str:
    """``text`` shown literally in markdown."""
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~$" else c for c in text)


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumb(path: str) -> bytes | None:
    """A thumbnail's bytes, cached: the grid redraws on every rerun, and a thumbnail's path
    names its photo's content, so it never changes."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _thumbnails(dataset, name: str, photos, index: int) -> None:
    if not photos:
        st.caption("No photos yet.")
        return
    every = st.session_state.get(f"data_all_{index}", False)
    shown = photos if every else photos[-SHOWN_PER_CLASS:]
    refused = changes_refused(dataset)
    with st.container(horizontal=True, gap="small", key=f"data_grid_{index}"):
        for photo in reversed(shown):  # newest first: the one just taken is at the top
            with st.container(width=84, gap=None, key=f"data_ph_{index}_{photo.hash}"):
                data = _thumb(str(dataset.thumb_path(photo)))
                if data:
                    st.image(data, width=80)
                else:
                    st.caption("(missing)")
                if st.button("Remove", key=f"data_rm_{index}_{photo.hash}", icon=":material/close:",
                             help=refused or f"Remove this photo ({photo.hash}) from '{name}'", type="tertiary",
                             disabled=refused is not None):
                    _remove(dataset, name, photo.hash)
    if len(photos) > len(shown):
        st.toggle(f"Show all {len(photos)}", key=f"data_all_{index}")


def _remove(dataset, name: str, digest: str) -> None:
    try:
        owner.require(dataset_owner(dataset), "change")
        _, sentence = made.remove_photo(dataset, name, digest)
    except UserError as exc:
        flash("error", str(exc))
    else:
        flash("success", sentence)
    st.rerun()


def _class_actions(dataset, name: str, index: int) -> None:
    refused = changes_refused(dataset)
    with st.popover("Edit class", icon=":material/edit:", disabled=refused is not None, help=refused):
        new = st.text_input("Rename to", value=name, key=f"data_rename_{index}", max_chars=made.LIMITS.max_name)
        if st.button("Rename", key=f"data_rename_go_{index}") and new.strip() != name:
            apply_change(dataset, lambda: made.rename_class(dataset, name, new),
                         f"Renamed '{name}' to '{new.strip()}'.")
        others = [n for n in dataset.classes if n != name]
        if others:
            target = st.selectbox("Merge into", others, key=f"data_merge_{index}")
            if st.button(f"Move its photos into '{target}'", key=f"data_merge_go_{index}"):
                apply_change(dataset, lambda: made.merge_class(dataset, name, target),
                             f"Merged '{name}' into '{target}'.")
        if st.checkbox(f"Delete '{name}' and its {len(dataset.classes[name])} photo(s)", key=f"data_del_ok_{index}"):
            if st.button("Delete class", key=f"data_del_{index}", type="primary"):
                apply_change(dataset, lambda: made.delete_class(dataset, name), f"Deleted class '{name}'.")


def apply_change(dataset, action, done: str) -> None:
    """Run one change of the made dataset ``dataset`` if this session may change it, flash
    ``done`` or its one-sentence refusal, rerun."""
    try:
        owner.require(dataset_owner(dataset), "change")
        action()
    except UserError as exc:
        flash("error", str(exc))
    else:
        flash("success", done)
    st.rerun()


# -- what next ---------------------------------------------------------------------------------

def ready(dataset) -> str | None:
    """Why the dataset cannot be trained on yet, or ``None``."""
    counts = dataset.counts()
    if len(counts) < 2:
        return "Add at least two classes to train."
    short = [n for n, c in counts.items() if c < made.MIN_PER_CLASS]
    if short:
        return f"Each class needs at least {made.MIN_PER_CLASS} photos to train ('{short[0]}' has fewer)."
    return None


def next_steps(dataset, root: str) -> None:
    """Train on it, download it as a zip, delete it."""
    st.subheader("Use it")
    st.caption(f"'{dataset.name}': {dataset.describe()}; limits: {made.LIMITS.describe()}.")
    problem = ready(dataset)
    if st.button("Train on this dataset", key="data_train", type="primary", icon=":material/model_training:",
                 disabled=problem is not None, help=problem):
        st.session_state["train_prefill"] = {"dataset": dataset.ref}
        st.switch_page("app_pages/train.py")
    if problem:
        st.caption(problem)
    update_from_data(dataset, root)
    st.download_button("Download as a zip of class folders", data=lambda: made.export_zip(dataset),
                       file_name=f"{dataset.id}.zip", mime="application/zip", key="data_zip_out",
                       icon=":material/download:", on_click="ignore")
    st.caption(EPHEMERAL_NOTE)
    used = made.runs_using(dataset)
    with st.expander("Delete this dataset"):
        if used:
            st.warning(f"Run(s) {', '.join(used)} trained on it: they keep working (open, classify, compare, export), "
                       "but their galleries will no longer show its photos.", icon=":material/warning:")
        refused = owner.refusal(dataset_owner(dataset))
        if refused:
            st.caption(refused)
            st.button("Delete dataset", key="data_delete", type="primary", disabled=True, help=refused)
        elif st.checkbox(f"Yes, delete '{dataset.name}' and its {dataset.photos} photo(s)", key="data_delete_ok"):
            if st.button("Delete dataset", key="data_delete", type="primary"):
                try:
                    owner.require(dataset_owner(dataset))
                    made.delete_dataset(dataset, root)
                except UserError as exc:
                    st.error(str(exc))
                else:
                    st.query_params.pop("data", None)
                    flash("success", f"Deleted '{dataset.name}'.")
                    _open("")
    owner.unlock("data")


def changes_refused(dataset) -> str | None:
    """Why this session may not change ``dataset`` (another visitor's), or ``None``."""
    return owner.refusal(dataset_owner(dataset), "change")
