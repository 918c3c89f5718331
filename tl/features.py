"""The on-disk cache of pooled backbone features for the feature-extraction strategies.

One ``.npy`` file per key, rows in item order. Writing streams chunk by chunk; reading
memory-maps the file and copies the requested rows out in one indexing operation, so
memory stays flat however many images there are, and a split's features come back as one
matrix (:meth:`FeatureStore.read`). A key covers everything that changes the features:
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
from pathlib import Path

import numpy as np

from tl.files import atomic_write_json, read_json, sha256_of

FEATURE_FORMAT = 1
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
