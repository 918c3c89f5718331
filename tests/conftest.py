"""Shared fixtures. Environment set here, before anything imports Keras.

- ``KERAS_HOME`` points at a private copy of the shared Keras folder (it holds Keras's own
  ImageNet class index), unless the caller set one already (``.ci/run`` does).
- TensorFlow's C++ logging is quietened.
- ``TL_CONVERTED_MODELS_DIR`` is one folder for the whole session (``shared_dir``).
"""

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import suite_plan

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "KERAS_HOME" not in os.environ:
    _home = Path(tempfile.mkdtemp(prefix="keras-home-"))
    for candidate in (REPO.parent / "shared" / "keras", REPO.parent.parent / "shared" / "keras"):
        if candidate.is_dir():
            shutil.copytree(candidate, _home, dirs_exist_ok=True)
            for path in [_home, *_home.rglob("*")]:  # the shared copy is read-only
                path.chmod(path.stat().st_mode | 0o200)
            break
    os.environ["KERAS_HOME"] = str(_home)
sys.path.insert(0, str(REPO))

from tl.config import RunConfig  # noqa: E402
from tl.datasets import synthetic_image  # noqa: E402

# Small, fast defaults for runs in tests: a tiny synthetic set at 16 pixels, a batch
# larger than any split, so each Keras function is traced once (tracing, not compute, is
# what a tiny run spends its time on), and exactly the epochs asked for (no step floor, no
# early stopping).
TINY = dict(dataset="synthetic", backbone="small_cnn", weights="none", image_size=16,
            batch_size=64, epochs=1, fine_tune_epochs=1, fine_tune_layers=2,
            samples_per_class=8, synthetic_classes=2, min_steps=0, early_stopping=0)


def tiny_config(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes})


def train_run(runs_dir, cfg, on_event=None):
    """prepare + execute a run in this process; return the Run."""
    from tl import training

    run = training.prepare(cfg, runs_dir)
    training.execute(run, runs_dir, on_event=on_event)
    return run


# The default backbone's real ImageNet weights, feature extraction at 224 px: the run that
# Classify, predict and export tests need a real ImageNet head for (trained once, `trained_once`).
LITE0_RUN = dict(backbone="efficientnet_lite0", weights="imagenet", image_size=224, strategy="feature_extraction",
                 name="lite0 for classify")


def write_image_folder(root, counts: dict, size: int = 20, fmt: str = "png"):
    """A folder of class sub-folders with ``counts[name]`` generated images each."""
    from PIL import Image

    root = Path(root)
    for label, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = synthetic_image(7, label * 1000 + i, label % 10, size=size)
            Image.fromarray(image).save(folder / f"{i:03d}.{fmt}")
    return root


def wait_for(check, what, timeout=180):
    """Poll ``check()`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    """A runs folder the app finds through ``$TL_RUNS_DIR`` (for AppTest pages)."""
    root = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    return root


@pytest.fixture
def runs_dir(tmp_path):
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own feature cache unless it shares a runs dir on purpose."""
    monkeypatch.delenv("TL_CACHE_DIR", raising=False)
    monkeypatch.delenv("TL_RUNS_DIR", raising=False)


@pytest.fixture(autouse=True)
def _not_shared(monkeypatch):
    """The app as on a laptop (everything is everyone's, tl.owners) unless a test shares it."""
    monkeypatch.delenv("TL_OWNER_SECRET", raising=False)
    monkeypatch.delenv("TL_SHARED", raising=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``TL_TEST_CPU=FILE``: one JSON line per test appended to FILE, the CPU seconds of
    this process and of the child processes it waited for (servers, workers, commands) during
    the test and its fixtures' setup, and its wall seconds (where the suite's time goes)."""
    target = os.environ.get("TL_TEST_CPU")
    if not target:
        yield
        return
    import resource

    def cpu(who):
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    own, children, started = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN), time.time()
    yield
    record = {"test": item.nodeid, "own": round(cpu(resource.RUSAGE_SELF) - own, 2),
              "children": round(cpu(resource.RUSAGE_CHILDREN) - children, 2), "wall": round(time.time() - started, 2)}
    with open(target, "a") as out:
        out.write(json.dumps(record) + "\n")


def pytest_xdist_make_scheduler(config, log):
    """Whole modules (and the browser group) per worker, longest first (``suite_plan``).
    ``TL_TEST_SCHEDULER=xdist`` leaves xdist's own scheduler in force (to see the canaries fail)."""
    if os.environ.get("TL_TEST_SCHEDULER") == "xdist":
        return None
    return suite_plan.make_scheduler(config, log)


@pytest.fixture(scope="session", autouse=True)
def shared_dir(tmp_path_factory):
    """A folder every worker of this pytest session sees (also ``suite_plan.SHARED``).

    The engine's converted models live there for the whole session (``TL_CONVERTED_MODELS_DIR``,
    inherited by the servers and workers tests start): a backbone is converted to OpenVINO
    once, not once per test (2.7 s for Lite0, 4.8 s for ResNet-50). Features are not shared:
    each test keeps its own ``<runs>/.cache``. Tests of the conversion cache unset it."""
    suite_plan.SHARED = suite_plan.shared_dir(tmp_path_factory)
    os.environ.setdefault("TL_CONVERTED_MODELS_DIR", str(suite_plan.SHARED / "converted-models"))
    return suite_plan.SHARED


@pytest.fixture(scope="module", autouse=True)
def _one_worker_per_unit(request, shared_dir):
    """The canary: a module (or group) whose tests reach a second worker fails there."""
    suite_plan.claim_unit(suite_plan.unit_of(request.node.nodeid))


@pytest.fixture(autouse=True)
def _no_streamlit_state_left():
    """Fail the test that leaves Streamlit inside an ``st.form`` or leaves AppTest's mock
    runtime installed: every later AppTest on this worker would fail instead, far from the cause."""
    yield
    if "streamlit" not in sys.modules:
        return
    from streamlit.delta_generator_singletons import context_dg_stack, get_dg_singleton_instance
    from streamlit.runtime import Runtime

    left = []
    if Runtime._instance is not None:
        left.append("a Streamlit runtime is still installed (an AppTest's mock runtime?)")
    if len(context_dg_stack.get()) > 1:
        left.append(f"{len(context_dg_stack.get()) - 1} container(s) still entered")
    try:
        main = get_dg_singleton_instance().main_dg
    except RuntimeError:  # no singletons made: Streamlit was imported, never used
        main = None
    # Bare mode (no runtime) gives every block the main container itself, so an st.form run
    # outside an app marks the process-wide main container as a form.
    if main is not None and main._form_data is not None:
        left.append(f"the main container is inside st.form({main._form_data.form_id!r}) "
                    "(page code run outside an app?)")
    if left:  # named once, here; put back so that the next test is judged on its own
        Runtime._instance = None
        if main is not None:
            main._form_data = None
        pytest.fail("This test leaves process-wide Streamlit state behind: " + "; ".join(left), pytrace=False)


@pytest.fixture(scope="session")
def trained_once(shared_dir):
    """``trained_once(cfg, runs_dir) -> Run``: a copy, in ``runs_dir``, of the run ``cfg``
    trains. Each config is trained once per test session, whichever worker asks first (the
    others wait on a file lock, then copy); every caller gets a copy of its own to change."""
    from tl import runs

    def get(cfg: RunConfig, runs_dir):
        key = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = shared_dir / "trained-once" / key
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "run_id").exists():
                run = train_run(folder / "runs", cfg)
                assert run.status()["status"] == "done", run.status()
                (folder / "run_id").write_text(run.id)
        run_id = (folder / "run_id").read_text()
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder / "runs" / run_id, Path(runs_dir) / run_id)
        return runs.get(run_id, runs_dir)

    return get


FRESH_SERVER_MB = 600  # about what `streamlit run` holds before its first model


@pytest.fixture
def fresh_server(monkeypatch):
    """This process counts as a freshly started app (``FRESH_SERVER_MB``) in the memory budget,
    whatever the tests before it on this worker left in it: a budget's refusals read the same
    on either worker and in any order."""
    from tl import memory

    real = memory.rss_mb
    monkeypatch.setattr(memory, "rss_mb", lambda pid=None: FRESH_SERVER_MB if pid in (None, os.getpid()) else real(pid))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- real photographs: crops of scikit-image's sample pictures ------------------------------

def _sample_picture(name: str, _cache={}):
    import skimage.data

    if name not in _cache:
        _cache[name] = getattr(skimage.data, name)()
    return _cache[name]


def photo(i: int = 0, picture: str = "chelsea", fmt: str = "JPEG") -> bytes:
    """A crop of a real photograph (a scikit-image sample); each ``i`` gives other bytes."""
    import io

    from PIL import Image

    image = _sample_picture(picture)
    h, w = image.shape[:2]
    y, x = (i * 7) % (h // 3), (i * 13) % (w // 3)
    out = io.BytesIO()
    Image.fromarray(image[y:y + h // 2, x:x + w // 2]).save(out, fmt)
    return out.getvalue()


def photos(n: int, picture: str = "chelsea", start: int = 0) -> list:
    """``(name, bytes)`` of ``n`` crops, as an upload gives them."""
    return [(f"{picture}-{i}.jpg", photo(i, picture)) for i in range(start, start + n)]


@pytest.fixture
def downloads(monkeypatch):
    """The bytes each download button of an AppTest page was given, by file name."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    saved = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        saved[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return saved
