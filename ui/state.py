"""Shared app state: the job manager, cached datasets, and which run a page shows."""

import hashlib
import sys

import streamlit as st

from tl import runs
from tl.data.catalogue import is_made
from tl.paths import runs_root

# Plotly's own toolbar floats over a chart's title on a phone; Streamlit's element toolbar
# (full screen, download) stays.
PLOTLY_CONFIG = {"displayModeBar": False, "displaylogo": False}
LIVE_SECONDS = 1.0  # how often a live view (a run's progress, a sweep's) is redrawn


def runs_dir() -> str:
    """The runs folder (``$TL_RUNS_DIR`` or ./runs), resolved."""
    return str(runs_root())


@st.cache_resource(show_spinner=False)
def serve_many() -> bool:
    """Once per server: stop Streamlit from resetting Keras after every script run.

    After each run of any session's script, Streamlit calls ``keras.backend.clear_session()``
    (``script_runner._clean_problem_modules``, meant for scripts that build a model per
    run). Here models are built once and shared by every session (:func:`load_predictor`),
    and that reset costs every session: it empties TensorFlow's kernel cache (the next
    prediction rebuilds its kernels), swaps Keras's global state under a model another
    session is loading, and runs a full garbage collection. Measured with bench/load.py
    (10 sessions, 2 cores): a Home page run went from 0.05 s to 1.1 s once a model had
    loaded. Matplotlib's clean-up, the other thing it does, is kept."""
    from streamlit.runtime.scriptrunner import script_runner

    if not hasattr(script_runner, "_clean_problem_modules"):
        return False  # another Streamlit: nothing to change

    def clean_without_keras() -> None:
        import sys

        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            try:
                pyplot.close("all")
            except Exception:  # as Streamlit does: never fail a run over it
                pass

    script_runner._clean_problem_modules = clean_without_keras
    from tl.memory import serve_quietly

    serve_quietly()  # fewer malloc arenas, free heap handed back: memory falls when sessions end
    return True


@st.cache_resource(show_spinner=False)
def compute_lock(kind: str):
    """One TensorFlow computation of a ``kind`` at a time in the server: "predict" (a
    Classify answer, tens of milliseconds) and "explain" (a Grad-CAM, about a second). On a
    small CPU several at once only share the cores, and each holds its activations, so ten
    sessions at once would hold ten times the memory for no gain; the two kinds have a lock
    each, so an answer never waits behind a queue of Grad-CAMs."""
    import threading

    return threading.Lock()


@st.cache_resource(show_spinner=False)
def job_manager(root: str):
    """One job manager per runs folder for the whole server, shared by every session."""
    from tl.jobs import JobManager

    return JobManager(root, app_memory=True)  # the server's own memory counts in the budget


@st.cache_resource(show_spinner=False)
def server_caches() -> dict:
    """The server's caches of large shared things, one set for every session, sized from
    the app's memory budget (``$TL_MEMORY_BUDGET_MB``: a quarter of it for models, a tenth
    for datasets; else 1,500 and 1,000 MB) and evicted least recently used first (see
    :mod:`tl.memory`)."""
    from tl.memory import Cache, cache_limit_mb

    return {"models": Cache("models", cache_limit_mb(0.25, 1500), max_entries=4, heavy=True, order=1),
            "data": Cache("data", cache_limit_mb(0.10, 1000), max_entries=8, order=0)}


def load_data(cfg_json: str):
    """The dataset a config names, capped and split (cached per config for the server)."""
    from tl import datasets, run_cost
    from tl.config import RunConfig

    cfg = RunConfig.from_json(cfg_json)
    cache = server_caches()["data"]
    found = cache.peek(cfg_json)
    if found is not None:
        return found
    with st.spinner("Reading the dataset..."):
        return cache.get(cfg_json, lambda: datasets.load(cfg), run_cost.data_mb(cfg), "Reading this dataset",
                         label=f"{cfg.dataset} {cfg.image_size} px ({hashlib.sha256(cfg_json.encode()).hexdigest()[:8]})")


def load_predictor(root: str, run_id: str):
    """Both heads of a run (:class:`tl.predict.Predictor`), built once per run for the whole
    server however many sessions ask at once, and held while the models cache has room."""
    from tl import run_cost

    cache = server_caches()["models"]
    key = f"{root}::{run_id}"
    found = cache.peek(key)
    if found is not None:
        return found

    def make():
        from tl.predict import Predictor

        return Predictor(runs.get(run_id, root))

    try:
        backbone = runs.get(run_id, root).config.backbone
    except Exception:  # a damaged run: Predictor says what is wrong with it
        backbone = None
    with st.spinner("Loading the run's model and its ImageNet head..."):
        if "tensorflow" not in sys.modules:  # the first model load also brings TensorFlow in
            from tl import memory

            memory.need(run_cost.TENSORFLOW_MB + run_cost.predictor_mb(backbone),
                        "Loading this run's model (and TensorFlow, the first time)")
        return cache.get(key, make, run_cost.predictor_mb(backbone), "Loading this run's model", label=run_id)


def data_key(cfg) -> str:
    """The config with only the fields that change the data, for :func:`load_data`. A made
    dataset changes under the same name, so its version goes into the key (as the config's
    ``name``, which nothing reads here): a new photo is a new entry, never a stale copy."""
    from tl.config import RunConfig

    return RunConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, backbone="small_cnn", weights="none",
                     image_size=cfg.image_size, samples_per_class=cfg.samples_per_class,
                     val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed,
                     synthetic_classes=cfg.synthetic_classes, name=_made_version(cfg.dataset)).to_json()


def _made_version(dataset: str) -> str:
    from tl.data import made
    from tl.errors import UserError

    if not is_made(dataset):
        return ""
    try:
        return f"version {made.find(dataset, runs_dir()).version}"
    except UserError:
        return "missing"


def dataset_choices(current: str | None = None) -> dict:
    """name -> description of every dataset a form offers: the registry's, then the ones
    made on the Data page (``data:NAME``); ``current`` is kept when it names a made dataset
    that is gone, so the form can say so instead of changing the choice behind the user."""
    from tl.data import made
    from tl.datasets import DATASETS

    choices = {name: spec.description for name, spec in DATASETS.items()}
    for dataset in made.list_datasets(runs_dir()):
        choices[dataset.ref] = f"Made on the Data page: {dataset.describe()}."
    if is_made(current) and current not in choices:
        choices[current] = "Made on the Data page, but not found here now (deleted?): pick another dataset."
    return choices


def current_run(root: str):
    """The run the Train page shows: this session's choice, else (on the first visit of
    the session: a reload or a shared link) the one in the URL, else the newest running or
    queued one, else ``None``. Kept in the URL so a reload finds it.

    Within a session the page's own choice wins over the URL, so coming Back from another
    page (whose ``?run=`` may still be in the address) shows what the user left here. An id
    in the URL that names no run gets one sentence, and the page goes on without it."""
    first_visit = not st.session_state.get("train_visited")
    st.session_state["train_visited"] = True
    run_id = st.session_state.get("run_id")
    wanted = st.query_params.get("run") if first_visit else None
    run = None
    for candidate in (run_id, wanted):
        if not candidate:
            continue
        try:
            run = runs.get(candidate, root)
            break
        except runs.RunNotFound:
            if candidate == wanted:
                del st.query_params["run"]
                st.warning(f"There is no run '{candidate}' in {root} (deleted, or a link from another "
                           "machine); pick one from the runs list below.", icon=":material/link_off:")
            st.session_state.pop("run_id", None)
    if run is None and first_visit:
        active = [r for r in runs.list_runs(root) if r.status().get("status") in ("running", "queued")]
        run = active[-1] if active else None  # the oldest active one is training now
    if run is not None:
        # The session remembers it; the address is written only by a user's choice
        # (show_run): each change of it is a step in the browser's history.
        st.session_state["run_id"] = run.id
    return run


def show_run(run_id: str) -> None:
    remember("run", run_id)


def remember(param: str, value: str) -> None:
    """Keep ``value`` for this session (``session_state["<param>_id"]``) and in the URL
    (``?<param>=``), so a reload or a shared link finds it again."""
    st.session_state[f"{param}_id"] = value
    if st.query_params.get(param) != value:
        st.query_params[param] = value


# -- form values that survive a trip to another page ------------------------------------

def restore_form(saved: str) -> None:
    """Put back the values the form's widgets had when the user left the page: Streamlit
    drops a widget's state once a run of another page does not draw it, so without this copy
    (kept under ``saved`` by :func:`save_form`) a form comes back at its defaults, after
    Classify and Back for instance."""
    for key, value in st.session_state.get(saved, {}).items():
        if key not in st.session_state:
            st.session_state[key] = value


def save_form(saved: str, keys) -> None:
    st.session_state[saved] = {k: st.session_state[k] for k in keys if k in st.session_state}


def widget_default(key: str, value) -> None:
    """A widget's starting value, set through the session state (never also as the widget's
    ``value``, which Streamlit warns about once the state was set by code)."""
    if st.session_state.get(key) is None:
        st.session_state[key] = value


def image_size_default(key: str, default: int, min_size: int) -> None:
    """The image-size field's starting value, raised to the backbone's minimum when a
    backbone with a larger one was chosen."""
    widget_default(key, max(default, min_size))
    if st.session_state[key] < min_size:
        st.session_state[key] = max(default, min_size)


def live_progress(job, active, label: str, stop_key: str) -> None:
    """A background job's progress bar (``label: what it says``) and its Stop button, redrawn
    every ``LIVE_SECONDS``; once its status leaves ``active`` the whole page reruns, to show
    what came of it. ``job``: a :class:`tl.background.Job`."""
    @st.fragment(run_every=LIVE_SECONDS)
    def live():
        if job.status()["status"] not in active:
            st.rerun()
        share, text = job.progress()
        st.progress(share, text=f"{label}: {text}")
        if st.button("Stop", key=stop_key, icon=":material/stop_circle:"):
            job.stop()
            st.rerun()
    live()
