"""Training across machines: several ``python -m tl train`` processes that ``TF_CONFIG``
joins into one ``tf.distribute.MultiWorkerMirroredStrategy`` cluster train one run in step.

Every worker runs the same training code on the same data, split and config. Each batch of
``batch_size`` images (the global batch, as across GPUs) is split between the workers and
their gradients are summed before every step, so steps per epoch and learning rates mean
what they mean on one machine. The chief (task ``chief``, else ``worker`` 0) writes the run;
any other worker writes only into a temporary folder of its own (:func:`worker_folders`),
removed when it ends.

The strategy needs every worker to run the same collective operations in the same order,
so a choice each process would make alone is made together where it decides which
collectives run or what weights they start from: :func:`every_worker` (a feature-cache hit
counts only when every worker has one), :func:`take_chiefs_weights` (every worker continues
from the chief's weights, whatever its own head fit gave), :func:`chiefs_text` (the chief's
run id, which the other workers report as the run they trained).

The app never joins a cluster: its job manager starts workers without ``TF_CONFIG``
(:func:`environment_without_cluster`).
"""

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.errors import UserError

TF_CONFIG = "TF_CONFIG"
TEXT_BYTES = 256  # the longest text chiefs_text passes on (run ids are about 50)
EXAMPLE = ('{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')
_COLLECTIVE_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int32, np.int64))
_state = {}  # the one strategy of this process: TensorFlow joins a cluster once


@dataclass(frozen=True)
class Role:
    """This process's place in the cluster.

    Attributes:
        task_type: "chief" or "worker", as ``TF_CONFIG`` names it.
        index: the task's index within its type.
        workers: how many processes train together, the chief included.
        chief: whether this process writes the run.
    """

    task_type: str
    index: int
    workers: int
    chief: bool

    @property
    def name(self) -> str:
        return "chief" if self.chief else "worker"

    @property
    def task(self) -> str:
        return f"{self.task_type}:{self.index}"

    def as_record(self) -> dict:
        """The fields a run's device event carries."""
        return {"workers": self.workers, "role": self.name, "task": self.task}


def role(environ=None) -> Role | None:
    """This process's :class:`Role` from ``$TF_CONFIG``, or ``None`` when it is not set
    (read without TensorFlow).

    Raises:
        UserError: ``TF_CONFIG`` is set but does not describe a chief-and-workers cluster
            that holds this task, in one sentence.
    """
    raw = (os.environ if environ is None else environ).get(TF_CONFIG)
    if not raw:
        return None

    def bad(why: str) -> UserError:
        return UserError(f"TF_CONFIG {why}; set it like {EXAMPLE} on each machine, with that machine's own task "
                         "index (README, \"Training across machines\"), or unset it to train on this machine.")

    try:
        spec = json.loads(raw)
    except ValueError:
        raise bad("is not valid JSON") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise bad("needs a \"cluster\" and a \"task\" object")
    other = sorted(set(cluster) - {"chief", "worker"})
    if other or task.get("type") not in ("chief", "worker"):
        raise bad(f"names a job other than chief and worker ({', '.join(other) or task.get('type')!r}), which "
                  "MultiWorkerMirroredStrategy does not train with")
    if not all(isinstance(cluster[job], list) for job in cluster):
        raise bad("needs a list of host:port addresses for each job")
    task_type, index = task["type"], task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster.get(task_type, [])):
        raise bad(f"names task {task_type} {index!r}, which its cluster does not list")
    chief = task_type == "chief" or ("chief" not in cluster and index == 0)
    return Role(task_type, index, sum(len(cluster[job]) for job in cluster), chief)


def check_config(cfg) -> None:
    """Raise a one-sentence :class:`UserError` for a config a cluster cannot train: one
    whose backbone starts from an earlier run (``weights='run:<id>'``), which only the
    chief's runs folder holds. Checked on every worker, so that all of them stop."""
    if cfg.weights.startswith("run:"):
        raise UserError(f"weights={cfg.weights!r} cannot train across machines, as only the chief has a runs "
                        "folder: start from imagenet, none or a weights file at the same path on every machine, "
                        "or train on one machine (unset TF_CONFIG).")


def environment_without_cluster(environ=None) -> dict:
    """A copy of the environment (``os.environ`` by default) without ``TF_CONFIG``: for
    processes that must train on this machine alone (the app's workers)."""
    return {key: value for key, value in (os.environ if environ is None else environ).items() if key != TF_CONFIG}


@contextlib.contextmanager
def worker_folders():
    """A temporary runs folder, with its own feature cache, for a worker that is not the
    chief: it trains exactly as the chief does, so it writes the same files, but none of
    them into the chief's runs folder or cache (``$TL_CACHE_DIR`` is pointed into it while
    the block runs). Removed at the end of the block. Yields the folder."""
    root = Path(tempfile.mkdtemp(prefix="tl-worker-"))
    previous = os.environ.get("TL_CACHE_DIR")
    os.environ["TL_CACHE_DIR"] = str(root / ".cache")
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop("TL_CACHE_DIR", None)
        else:
            os.environ["TL_CACHE_DIR"] = previous
        shutil.rmtree(root, ignore_errors=True)


# -- the strategy ----------------------------------------------------------------------

def strategy():
    """This process's ``MultiWorkerMirroredStrategy``, made on the first call (it must come
    before TensorFlow runs anything; later calls, say a second run in the same process,
    get the same one).

    Keras 3 trains with it once two reductions it asks of the strategy are answered the way
    ``MirroredStrategy`` answers them (keras-team/keras#20585): ``fit`` and ``evaluate``
    reduce their first batch (images and labels, a nested structure) only to read its
    shapes, which the multi-worker strategy cannot do for a structure (nor for uint8
    images); and the per-step metrics, scalars, are averaged "along axis 0"."""
    if "strategy" not in _state:
        _state["strategy"] = _keras_ready_strategy()
    return _state["strategy"]


def _keras_ready_strategy():
    import tensorflow as tf

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if axis is None and tf.nest.is_nested(value):  # a batch, for its shapes: this worker's part
                return tf.nest.map_structure(lambda v: self.experimental_local_results(v)[0], value)
            if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None  # a scalar per replica: the mean over replicas
            return super().reduce(reduce_op, value, axis)

    return MultiWorker()


def _joined():
    """The strategy when this process trains in a cluster of several workers, else ``None``."""
    if "strategy" not in _state:  # no cluster joined (TF_CONFIG is not even read)
        return None
    found = role()
    return _state["strategy"] if found and found.workers > 1 else None


def _sum(values: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return np.asarray(_joined().reduce(tf.distribute.ReduceOp.SUM, tf.constant(values), axis=None))


def joined() -> bool:
    """Whether this process trains in a cluster of several workers."""
    return _joined() is not None


def every_worker(flag: bool) -> bool:
    """Whether ``flag`` is true on every worker of the cluster (``flag`` itself outside
    one). Every worker must call it at the same point."""
    if _joined() is None:
        return bool(flag)
    return int(_sum(np.array(int(bool(flag)), dtype=np.int32))) == role().workers


def chiefs_text(text: str) -> str:
    """The chief's ``text`` (up to ``TEXT_BYTES`` UTF-8 bytes), on every worker (``text``
    itself outside a cluster). Every worker must call it at the same point."""
    if _joined() is None:
        return text
    raw = np.frombuffer(text.encode()[:TEXT_BYTES].ljust(TEXT_BYTES, b"\0"), dtype=np.uint8).astype(np.int32)
    mine = raw if role().chief else np.zeros_like(raw)  # the others add zeros
    return bytes(_sum(mine).astype(np.uint8)).rstrip(b"\0").decode(errors="replace")


def take_chiefs_weights(model) -> None:
    """Set ``model``'s weights on every worker to the chief's, exactly (the other workers
    add zeros to them), so that training continues from one model whatever each worker
    computed alone before (its own head fit on its own features). No-op outside a cluster.
    Every worker must call it at the same point."""
    if _joined() is None:
        return
    weights = model.get_weights()
    groups = {}  # one all-reduce per dtype the collectives carry; other dtypes (seeds: uint32) as int64
    for i, weight in enumerate(weights):
        kind = weight.dtype if weight.dtype in _COLLECTIVE_DTYPES else np.dtype(np.int64)
        groups.setdefault(kind, []).append(i)
    for kind, chosen in groups.items():
        flat = np.concatenate([np.ravel(weights[i]).astype(kind) for i in chosen])
        total = _sum(flat if role().chief else np.zeros_like(flat))
        offset = 0
        for i in chosen:
            size = weights[i].size
            weights[i] = total[offset:offset + size].reshape(weights[i].shape).astype(weights[i].dtype)
            offset += size
    model.set_weights(weights)
    _refresh_normalization(model)


def _refresh_normalization(model) -> None:
    """Let the ``Normalization`` layers of ``model`` and the models inside it use the
    statistics just set (:func:`tl.heads.refresh_standardization`)."""
    from tl.heads import refresh_standardization

    refresh_standardization(model)
    for layer in model.layers:
        if hasattr(layer, "layers"):
            _refresh_normalization(layer)
