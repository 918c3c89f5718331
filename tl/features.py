"""The on-disk cache of pooled backbone features, one row per photo, shared by every dataset
(and every version of one) that holds the photo.

Layout, under ``<cache>/features/``: one folder per backbone setting (:func:`config_key`:
backbone, weights, cut layer, image size, the inference precision ``engine_precision``:
fp32 features from TensorFlow and from OpenVINO agree to about 1e-5 and share rows; bf16
ones never mix with them; the training precision policy is not part of it). In it:

- ``part-<time>-<pid>.npy`` + ``.json``: a float32 matrix written once by one extraction
  (never changed afterwards: append-only) and its record: the photo key of each row, the
  shape and the sha256 of the file. The folder's index, photo key -> (part, row), is the
  union of the records, so two processes extracting at once never write the same file.
- ``views/<key>.json``: the photo keys of one dataset version in item order, named by
  :func:`cache_key` (the setting and the data's fingerprint): what a run's ``features``
  event names and :func:`lookup` reads back.

A photo's key is its content hash where the data knows it (made datasets and folders: the
sha256 their scans already compute, so it costs nothing), else the data's fingerprint and
the item's index (synthetic and public datasets, which never grow: one key per version, as
before). So a made dataset's new version extracts only its new photos. Reads memory-map the
parts and copy the requested rows out (:class:`CachedRows`), so memory stays flat however
many photos there are. :func:`features_of` is the one pass over a dataset through the cache
that training and the data check both call (engine choice, keys, progress events,
cancellation).
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

FEATURE_FORMAT = 3  # 3: rows per photo in parts; 2: photos of varied sizes resized in float as served
CHUNK_BATCHES = 32


def config_key(*, backbone: str, weights: str, cut: str | None, image_size: int, engine_precision: str) -> str:
    """A short hash naming the folder of every photo's features for this backbone setting."""
    parts = {
        "format": FEATURE_FORMAT, "backbone": backbone, "weights": weights, "cut": cut or "last",
        "image_size": image_size, "engine_precision": engine_precision,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cache_key(*, backbone: str, weights: str, cut: str | None, image_size: int,
              engine_precision: str, fingerprint: str) -> str:
    """A short hash naming one dataset version's rows for this setting (its view)."""
    setting = config_key(backbone=backbone, weights=weights, cut=cut, image_size=image_size,
                         engine_precision=engine_precision)
    return hashlib.sha256(f"{setting}|{fingerprint}".encode()).hexdigest()[:20]


def item_keys(data) -> list:
    """The photo key of each item of ``data`` (see the module's docstring)."""
    if data.content_hashes is not None:
        return [f"sha256:{digest}" for digest in data.content_hashes]
    return [f"{data.fingerprint}:{index}" for index in range(len(data))]


class _Rows:
    """What both row stores answer: ``shape`` ``(rows, dim)``, ``len`` and ``dim``."""

    shape: tuple

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dim(self) -> int:
        return self.shape[1]


class FeatureStore(_Rows):
    """Rows of one feature file (a part), read through a memory map."""

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


class CachedRows(_Rows):
    """One dataset version's features, item by item, gathered from the parts that hold them;
    reads like a :class:`FeatureStore` (``read``, ``shape``, ``dim``, ``len``)."""

    def __init__(self, parts: list, where: np.ndarray, dim: int):
        self.parts, self.where = parts, where  # where: (n, 2) part index, row in that part
        self.shape = (len(where), dim)

    def read(self, rows) -> np.ndarray:
        """Rows ``rows`` (any order, repeats allowed) as one float32 ``(len, dim)`` array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"Rows outside 0..{len(self) - 1} of the cached features.")
        picked = self.where[rows]
        parts = np.unique(picked[:, 0])
        if len(parts) == 1:
            return self.parts[parts[0]].read(picked[:, 1])
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for part in parts:
            mask = picked[:, 0] == part
            out[mask] = self.parts[part].read(picked[mask, 1])
        return out


PRECISIONS = ("fp32", "bf16", "fp16")  # what engine_precision can be (tl.engine.Choice)


def cached_count(data, *, root, backbone: str, weights: str, cut: str | None, image_size: int) -> int:
    """How many of ``data``'s photos the cache already holds for this setting (in the
    precision holding the most: which one the run will use is not known before it starts),
    for the time estimate. Reads the parts' records only: no TensorFlow."""
    items = set(item_keys(data))
    best = 0
    for precision in PRECISIONS:
        folder = Path(root) / "features" / config_key(backbone=backbone, weights=weights, cut=cut,
                                                      image_size=image_size, engine_precision=precision)
        if folder.is_dir():
            best = max(best, len(items & _index(folder)[0].keys()))
    return best


def _index(folder: Path) -> tuple:
    """``(photo key -> (part name, row), part name -> its record)`` of a setting's folder;
    a photo in several parts (two extractions at once) is read from the oldest."""
    index, records = {}, {}
    for record_path in sorted(folder.glob("part-*.json")):
        try:
            record = read_json(record_path)
        except (OSError, ValueError):
            record = None
        name = record_path.stem
        records[name] = record
        if isinstance(record, dict) and isinstance(record.get("items"), list):
            for row, item in enumerate(record["items"]):
                index.setdefault(item, (name, row))
    return index, records


def _check_part(folder: Path, name: str, record) -> str | None:
    """Why a part cannot be used, or ``None``."""
    if (not isinstance(record, dict) or not isinstance(record.get("rows"), int)
            or not isinstance(record.get("dim"), int) or not isinstance(record.get("items"), list)
            or len(record["items"]) != record["rows"]):
        return "its record is missing or unreadable"
    path = folder / f"{name}.npy"
    try:
        store = FeatureStore(path)
        size = path.stat().st_size
    except (OSError, ValueError):
        return "not a float32 matrix"
    if store.shape != (record["rows"], record["dim"]) or size != store.offset + store.shape[0] * store.row_bytes:
        return "its size does not match its header"
    if record.get("sha256"):
        with open(path, "rb") as handle:
            if sha256_of(handle) != record["sha256"]:
                return "its checksum does not match"
    return None


def gather(folder, items, *, label: str = "", on_damaged=None, verified=None) -> tuple:
    """``(CachedRows or None, indices of the items not cached)`` for the photo keys ``items``
    in the setting's ``folder``. Each part the items need is checked (record, header, size,
    sha256) unless named in ``verified`` (a set, filled in here); a damaged one is removed and
    reported through ``on_damaged(sentence)``, so its photos count as not cached."""
    folder = Path(folder)
    verified = set() if verified is None else verified
    while True:
        index, records = _index(folder)
        damaged = False
        unreadable = {name for name, record in records.items()  # whose photos it holds is unknown
                      if not isinstance(record, dict) or not isinstance(record.get("items"), list)}
        for name in sorted(({index[item][0] for item in items if item in index} | unreadable) - verified):
            problem = _check_part(folder, name, records[name])
            if problem is None:
                verified.add(name)
                continue
            for suffix in (".json", ".npy"):
                (folder / f"{name}{suffix}").unlink(missing_ok=True)
            damaged = True
            if on_damaged:
                on_damaged(f"The cached features {label or name} were damaged ({problem}); extracting them again.")
        if not damaged:
            break
    missing = [i for i, item in enumerate(items) if item not in index]
    if missing or not items:
        return None, missing
    names = sorted({index[item][0] for item in items})
    number = {name: i for i, name in enumerate(names)}
    where = np.array([(number[index[item][0]], index[item][1]) for item in items], dtype=np.int64)
    parts = [FeatureStore(folder / f"{name}.npy") for name in names]
    return CachedRows(parts, where, parts[0].dim), []


def write_view(folder, key: str, items, meta: dict | None = None) -> None:
    """Record ``items`` (photo keys in item order) as the view ``key`` of ``folder``."""
    views = Path(folder) / "views"
    views.mkdir(parents=True, exist_ok=True)
    atomic_write_json(views / f"{key}.json", dict(meta or {}, key=key, items=list(items)))


def lookup(root, key: str, on_damaged=None) -> CachedRows | None:
    """The cached features of the dataset version a run's ``features`` event names (``key``),
    or ``None`` when the view is gone or any of its photos is not cached. A damaged part is
    removed and reported as :func:`gather` does, and ``None`` returned, so it is extracted again."""
    for view_path in sorted((Path(root) / "features").glob(f"*/views/{key}.json")):
        try:
            items = read_json(view_path).get("items")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(items, list):
            store, missing = gather(view_path.parents[1], items, label=key, on_damaged=on_damaged)
            return None if missing else store
    return None


def extract(folder, extractor, batches, items, *, meta: dict, on_chunk=None) -> FeatureStore:
    """Run ``extractor`` (a :class:`tl.engine.Pass`, or a Keras model, run as it is) over
    ``batches`` (an iterable of tf.data pipelines, one per chunk) and write the pooled
    features of the photos ``items`` (their keys, in batch order) as a new part of the
    setting's ``folder``, its record (keys, shape, sha256, ``meta``) beside it.

    ``on_chunk(done, total)`` is called after each chunk; it may raise to stop (the partial
    file is removed, nothing is cached). Temporary files of killed extractions are removed.
    """
    from tl.engine import Choice, Pass

    if not isinstance(extractor, Pass):
        extractor = Pass(extractor, Choice("tensorflow", "fp32"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(folder)
    _remove_old_format(folder.parent)
    total = len(items)
    dim = int(extractor.model.output.shape[-1])
    name = f"part-{time.time_ns():020d}-{os.getpid()}"
    tmp = folder / f".features.{os.getpid()}.npy.tmp"
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
        os.replace(tmp, folder / f"{name}.npy")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Last: a part counts once its record is there (a killed process leaves an orphan .npy,
    # removed with the dead temporaries).
    atomic_write_json(folder / f"{name}.json",
                      dict(meta, rows=total, dim=dim, sha256=digest.hexdigest(), items=list(items)))
    return FeatureStore(folder / f"{name}.npy")


@dataclass
class Extracted:
    """What :func:`features_of` gives: the store, whether it was a cache ``"hit"`` (every
    photo cached) or ``"miss"``, the engine that ran (or would have run) the pass, the view's
    cache key, the seconds the pass took (0 on a hit), and how many items came from the
    cache (``reused``) and how many photos went through the backbone (``computed``)."""

    store: CachedRows
    cache: str
    choice: object  # tl.engine.Choice
    key: str
    seconds: float
    reused: int = 0
    computed: int = 0


def features_of(data, extractor, *, root, backbone: str, weights: str, cut: str | None, image_size: int,
                batch_size: int, emit, engine: str | None = None, precision: str | None = None,
                should_stop=None) -> Extracted:
    """The pooled features of every item of ``data``: the photos already cached for the same
    backbone, weights, cut, size and precision are read from the cache, only the others go
    through the backbone (and into the cache).

    Args:
        data: a :class:`tl.data.core.Data`; its photo keys (:func:`item_keys`) and fingerprint
            name the rows.
        extractor: a callable returning the Keras feature model
            (:func:`tl.models.feature_extractor`); called only when photos are missing.
        weights: what identifies the backbone's weights (:func:`tl.weights.initial_weights`).
        cut: the layer the backbone is cut at (``None``: its last).
        emit: ``emit(event_type, **fields)``: ``"log"`` for the engine's notes and a damaged
            part; ``"features"`` with ``cache="hit"``, or ``cache="miss"`` with ``done`` of
            ``images`` (the photos to extract; at the start, at most every
            BATCH_EVENT_SECONDS, at the end), then ``cache="stored"`` with the ``seconds`` it
            took; each with ``reused`` (items read from the cache) and the engine's record.
        engine, precision: the caller's choice (:func:`tl.engine.choose`).
        should_stop: called after each chunk of images; when it returns true the pass stops
            (nothing of it is cached) with :class:`tl.errors.Cancelled`.
    """
    from tl import cluster
    from tl import engine as engines
    from tl.data.pipeline import image_pipeline
    from tl.errors import Cancelled
    from tl.history import BATCH_EVENT_SECONDS

    choice = engines.choose(engine, precision)
    if choice.note:
        emit("log", message=choice.note)
    items, started = item_keys(data), time.time()
    setting = {"backbone": backbone, "weights": weights, "cut": cut, "image_size": image_size}

    def look(choice):
        folder = Path(root) / "features" / config_key(engine_precision=choice.precision, **setting)
        key = cache_key(engine_precision=choice.precision, fingerprint=data.fingerprint, **setting)
        verified = set()
        store, missing = gather(folder, items, label=key, verified=verified,
                                on_damaged=lambda message: emit("log", message=message))
        return folder, key, verified, store, missing

    def hit(folder, key, store, choice):
        write_view(folder, key, items, {"dataset": data.name, "fingerprint": data.fingerprint})
        emit("features", cache="hit", key=key, images=len(data), reused=len(data), seconds=0.0, **choice.as_record())
        return Extracted(store, "hit", choice, key, 0.0, reused=len(data))

    folder, key, verified, store, missing = look(choice)
    # A cluster extracts together (a collective predict, every photo) or not at all.
    if cluster.every_worker(not missing):
        return hit(folder, key, store, choice)
    runner = engines.compile(extractor(), cache_root=root, choice=choice,
                             key={"pass": "features", "backbone": backbone, "weights": weights,
                                  "cut": cut or "last", "image_size": image_size},
                             on_note=lambda message: emit("log", message=message))
    if runner.choice != choice:  # fell back (the model did not convert): that precision's rows
        choice = runner.choice
        folder, key, verified, store, missing = look(choice)
        if not missing and not cluster.joined():
            return hit(folder, key, store, choice)
    if cluster.joined():
        missing = list(range(len(data)))
    first = {}
    for i in missing:
        first.setdefault(items[i], i)
    todo = list(first.values())  # one row per photo (a folder may hold a photo twice)
    reused, total = len(data) - len(missing), len(todo)
    emit("features", cache="miss", key=key, images=total, reused=reused, done=0, **choice.as_record())
    last = [0.0]

    def on_chunk(done, total):
        if should_stop is not None and should_stop():
            raise Cancelled()
        if time.time() - last[0] >= BATCH_EVENT_SECONDS or done == total:
            last[0] = time.time()
            emit("features", cache="miss", key=key, images=total, reused=reused, done=done, **choice.as_record())

    pipelines = (image_pipeline(data, chunk, batch_size, image_size=image_size)
                 for chunk in chunks(np.asarray(todo, dtype=np.int64), batch_size))
    extract(folder, runner, pipelines, [items[i] for i in todo], on_chunk=on_chunk, meta={
        "backbone": backbone, "weights": weights, "cut": cut or "last", "image_size": image_size,
        "dataset": data.name, "fingerprint": data.fingerprint, **choice.as_record()})
    store, missing = gather(folder, items, label=key, verified=verified,
                            on_damaged=lambda message: emit("log", message=message))
    if missing:  # a part removed between the extraction and now (a concurrent cleaner)
        raise RuntimeError(f"The cached features of {len(missing)} photo(s) went missing during extraction.")
    write_view(folder, key, items, {"dataset": data.name, "fingerprint": data.fingerprint})
    seconds = time.time() - started
    emit("features", cache="stored", key=key, images=total, reused=reused, seconds=round(seconds, 3),
         **choice.as_record())
    return Extracted(store, "miss", choice, key, seconds, reused=reused, computed=total)


def _remove_dead_temporaries(folder: Path) -> None:
    """``.features.<pid>.*`` temporaries and record-less ``part-<time>-<pid>.npy`` files
    whose process is gone (killed mid-extraction)."""
    from tl.processes import same_process

    def dead(pid: str) -> bool:
        return not pid.isdigit() or not same_process(int(pid))

    for tmp in folder.glob(".features.*.tmp"):
        if dead(tmp.name.split(".")[2]):
            tmp.unlink(missing_ok=True)
    for part in folder.glob("part-*.npy"):
        if not part.with_suffix(".json").exists() and dead(part.stem.rsplit("-", 1)[-1]):
            part.unlink(missing_ok=True)


def _remove_old_format(root: Path) -> None:
    """Entries of the cache before rows per photo (``<key>/features.npy``, one per dataset
    version): nothing reads them any more, so their disk is freed."""
    for old in root.glob("*/features.npy"):
        shutil.rmtree(old.parent, ignore_errors=True)


def chunks(indices, batch_size: int):
    """Split item indices into chunks of ``CHUNK_BATCHES`` batches for :func:`extract`."""
    size = batch_size * CHUNK_BATCHES
    indices = np.asarray(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def feature_pipeline(store, rows, labels, batch_size: int, *, shuffle: bool = False,
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
