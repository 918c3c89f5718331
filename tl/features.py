"""The on-disk cache of pooled backbone features for the feature-extraction strategies.

One ``.npy`` file per key, rows in item order. Writing streams chunk by chunk; reading
memory-maps the file and copies the requested rows out in one indexing operation, so
memory stays flat however many images there are, and a split's features come back as one
matrix (:meth:`FeatureStore.read`). :func:`features_of` is the one pass over a dataset through
the cache that training and the data check both call (engine choice, key, progress events,
cancellation). A key covers everything that changes the features:
backbone, weights, cut layer, image size, the inference precision (``engine_precision``:
fp32 features from TensorFlow and from OpenVINO agree to about 1e-5 and share entries; bf16
ones never mix with them) and the data's fingerprint. The training precision policy is not
part of it.
"""

import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.files import atomic_write_json, read_json, sha256_of

FEATURE_FORMAT = 2  # 2: photos of varied sizes resized in float as the served model does, not rounded
CHUNK_BATCHES = 32


def cache_key(*, backbone: str, weights: str, cut: str | None, image_size: int,
              engine_precision: str, fingerprint: str) -> str:
    """A short hash naming the cache entry for these inputs."""
    parts = {
        "format": FEATURE_FORMAT, "backbone": backbone, "weights": weights, "cut": cut or "last",
        "image_size": image_size, "engine_precision": engine_precision, "data": fingerprint,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class FeatureStore:
    """Rows of a cached feature file, read through a memory map."""

    def __init__(self, path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise ValueError(f"Unexpected feature file layout in {self.path}.")
        self.shape = shape
        self.row_bytes = shape[1] * 4

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]

    def read(self, rows) -> np.ndarray:
        """Return rows ``rows`` (any order, repeats allowed) as one float32 ``(len, dim)``
        array: a single fancy index into the memory map, which the OS serves page by page."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"Rows outside 0..{len(self) - 1} of {self.path}.")
        matrix = np.memmap(self.path, dtype=np.float32, mode="r", offset=self.offset, shape=self.shape)
        try:
            return np.asarray(matrix[rows])  # fancy indexing copies the rows out of the map
        finally:
            del matrix  # unmap now, not at garbage collection


def lookup(root, key: str, on_damaged=None) -> FeatureStore | None:
    """The cached store for ``key``, or ``None``. An entry that fails its checks (meta.json
    unreadable, a header or size that does not match it, a sha256 that differs from the one
    written at extraction) is removed, reported through ``on_damaged(sentence)``, and
    ``None`` returned, so the features are extracted again."""
    folder = Path(root) / "features" / key
    path = folder / "features.npy"
    if not path.is_file():
        return None
    problem = _check_entry(folder)
    if problem is None:
        return FeatureStore(path)
    shutil.rmtree(folder, ignore_errors=True)
    if on_damaged:
        on_damaged(f"The cached features {key} were damaged ({problem}); extracting them again.")
    return None


def _check_entry(folder: Path) -> str | None:
    """Why a cache entry cannot be used, or ``None``."""
    try:
        meta = read_json(folder / "meta.json")
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("rows"), int) or not isinstance(meta.get("dim"), int):
        return "meta.json missing or unreadable"
    try:
        store = FeatureStore(folder / "features.npy")
        size = (folder / "features.npy").stat().st_size
    except (OSError, ValueError):
        return "not a float32 matrix"
    if store.shape != (meta["rows"], meta["dim"]) or size != store.offset + store.shape[0] * store.row_bytes:
        return "its size does not match its header"
    if meta.get("sha256"):
        with open(folder / "features.npy", "rb") as handle:
            if sha256_of(handle) != meta["sha256"]:
                return "its checksum does not match"
    return None


def extract(root, key: str, extractor, batches, total: int, *, meta: dict, on_chunk=None) -> FeatureStore:
    """Run ``extractor`` (a :class:`tl.engine.Pass`, or a Keras model, run as it is) over
    ``batches`` (an iterable of tf.data pipelines, one per chunk) and write the pooled
    features of all ``total`` items to the cache under ``key``, with their sha256 in meta.json.

    ``on_chunk(done, total)`` is called after each chunk; it may raise to stop (the partial
    file is removed, nothing is cached). Temporary files of killed extractions are removed.
    """
    from tl.engine import Choice, Pass

    if not isinstance(extractor, Pass):
        extractor = Pass(extractor, Choice("tensorflow", "fp32"))
    folder = Path(root) / "features" / key
    folder.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(folder)
    dim = int(extractor.model.output.shape[-1])
    final = folder / "features.npy"
    tmp = folder / f".features.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as handle:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f4", "fortran_order": False, "shape": (total, dim)})
            handle.write(header.getvalue())
            digest.update(header.getvalue())
            for pipeline in batches:
                features = extractor.predict(pipeline)
                block = np.asarray(features, dtype=np.float32).reshape(len(features), dim).tobytes()
                handle.write(block)
                digest.update(block)
                done += len(features)
                if on_chunk:
                    on_chunk(done, total)
            handle.flush()
            os.fsync(handle.fileno())
        if done != total:
            raise RuntimeError(f"Feature extraction produced {done} rows for {total} items.")
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_json(folder / "meta.json", dict(meta, rows=total, dim=dim, key=key, sha256=digest.hexdigest()))
    return FeatureStore(final)


@dataclass
class Extracted:
    """What :func:`features_of` gives: the store, whether it was a cache ``"hit"`` or
    ``"miss"``, the engine that ran (or would have run) the pass, its cache key, and the
    seconds the pass took (0 on a hit)."""

    store: FeatureStore
    cache: str
    choice: object  # tl.engine.Choice
    key: str
    seconds: float


def features_of(data, extractor, *, root, backbone: str, weights: str, cut: str | None, image_size: int,
                batch_size: int, emit, engine: str | None = None, precision: str | None = None,
                should_stop=None) -> Extracted:
    """The pooled features of every item of ``data``, from the cache when an entry for the
    same backbone, weights, cut, size, precision and data is there, else extracted into it.

    Args:
        data: a :class:`tl.data.core.Data`; its fingerprint is part of the key.
        extractor: a callable returning the Keras feature model
            (:func:`tl.models.feature_extractor`); called only on a miss.
        weights: what identifies the backbone's weights (:func:`tl.weights.initial_weights`).
        cut: the layer the backbone is cut at (``None``: its last).
        emit: ``emit(event_type, **fields)``: ``"log"`` for the engine's notes and a damaged
            entry; ``"features"`` with ``cache="hit"``, or ``cache="miss"`` with ``done`` of
            ``images`` (at the start, at most every BATCH_EVENT_SECONDS, at the end), then
            ``cache="stored"`` with the ``seconds`` it took; each with the engine's record.
        engine, precision: the caller's choice (:func:`tl.engine.choose`).
        should_stop: called after each chunk of images; when it returns true the pass stops
            (nothing is cached) with :class:`tl.errors.Cancelled`.
    """
    from tl import cluster
    from tl import engine as engines
    from tl.data.pipeline import image_pipeline
    from tl.errors import Cancelled
    from tl.history import BATCH_EVENT_SECONDS

    choice = engines.choose(engine, precision)
    if choice.note:
        emit("log", message=choice.note)

    def key_of(engine_precision):
        return cache_key(backbone=backbone, weights=weights, cut=cut, image_size=image_size,
                         engine_precision=engine_precision, fingerprint=data.fingerprint)

    key = key_of(choice.precision)
    started = time.time()
    store = lookup(root, key, on_damaged=lambda message: emit("log", message=message))
    # A cluster extracts together (a collective predict) or not at all.
    if cluster.every_worker(store is not None and len(store) == len(data)):
        emit("features", cache="hit", key=key, images=len(store), seconds=0.0, **choice.as_record())
        return Extracted(store, "hit", choice, key, 0.0)
    runner = engines.compile(extractor(), cache_root=root, choice=choice,
                             key={"pass": "features", "backbone": backbone, "weights": weights,
                                  "cut": cut or "last", "image_size": image_size},
                             on_note=lambda message: emit("log", message=message))
    if runner.choice != choice:  # fell back (the model did not convert): its own key
        choice = runner.choice
        key = key_of(runner.precision)
    total = len(data)
    emit("features", cache="miss", key=key, images=total, done=0, **choice.as_record())
    last = [0.0]

    def on_chunk(done, total):
        if should_stop is not None and should_stop():
            raise Cancelled()
        if time.time() - last[0] >= BATCH_EVENT_SECONDS or done == total:
            last[0] = time.time()
            emit("features", cache="miss", key=key, images=total, done=done, **choice.as_record())

    pipelines = (image_pipeline(data, chunk, batch_size, image_size=image_size)
                 for chunk in chunks(np.arange(total), batch_size))
    store = extract(root, key, runner, pipelines, total, on_chunk=on_chunk, meta={
        "backbone": backbone, "weights": weights, "cut": cut or "last", "image_size": image_size,
        "dataset": data.name, "fingerprint": data.fingerprint, **choice.as_record()})
    seconds = time.time() - started
    emit("features", cache="stored", key=key, images=total, seconds=round(seconds, 3), **choice.as_record())
    return Extracted(store, "miss", choice, key, seconds)


def _remove_dead_temporaries(folder: Path) -> None:
    """``.features.<pid>.tmp`` files whose process is gone (killed mid-extraction)."""
    from tl.processes import same_process

    for tmp in folder.glob(".features.*.tmp"):
        pid = tmp.name.split(".")[2]
        if not pid.isdigit() or not same_process(int(pid)):
            tmp.unlink(missing_ok=True)


def chunks(indices, batch_size: int):
    """Split item indices into chunks of ``CHUNK_BATCHES`` batches for :func:`extract`."""
    size = batch_size * CHUNK_BATCHES
    indices = np.asarray(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def feature_pipeline(store: FeatureStore, rows, labels, batch_size: int, *, shuffle: bool = False,
                     seed: int = 0, class_weights=None):
    """Stream cached features as ``(features (B,1,1,C), labels[, weights])`` batches."""
    import tensorflow as tf

    rows = np.asarray(rows, dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((rows, np.asarray(labels, dtype=np.int32)))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    dim = store.dim

    def read(batch_rows):
        features = tf.numpy_function(store.read, [batch_rows], tf.float32, stateful=False)
        return tf.reshape(features, [-1, 1, 1, dim])

    ds = ds.batch(batch_size).map(lambda r, y: (read(r), y), num_parallel_calls=tf.data.AUTOTUNE)
    if class_weights is not None:
        table = tf.constant(np.asarray(class_weights, dtype=np.float32))
        ds = ds.map(lambda x, y: (x, y, tf.gather(table, y)))
    return ds.prefetch(tf.data.AUTOTUNE)
