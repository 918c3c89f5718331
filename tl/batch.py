"""Classify many photos with one finished run: a folder, a zip or a list of files, batched.

:func:`classify` (or :func:`iter_batches`, one list of rows per batch) takes ``(name, bytes
or path)`` pairs and a :class:`tl.predict.Predictor`. A thread pool decodes the photos ahead of
the model (:func:`tl.images.decode_image` at ``DRAFT_SIZE``) and resizes each to the run's
input size with the function of the model's own ``resize`` layer, so a batch shares one size
and the layer sees exactly what :meth:`Predictor.predict` gives it one photo at a time (run
again on pictures already at that size, it leaves them as they are). The batch then goes through the
engine's pass (``predictor.transfer_path.runner``): one backbone pass for both heads where the
run shares it. Each photo becomes a :class:`Row`: its :class:`tl.predict.Prediction`
(top-k, calibrated confidence, novelty, "none of my classes" by the run's rule through
:meth:`Predictor.judge`), or the one sentence saying why it could not be read; one unreadable
photo never stops the others.

Inputs: :func:`folder_photos` (a folder, recursively, junk skipped) and :func:`zip_photos` (a
zip, through :func:`tl.ingest.extract_images`: the upload's entry checks and bomb limits, then
extraction into a temporary folder that is removed afterwards; nothing is stored under the
data root). Outputs: :func:`write_csv` and :func:`sorted_zip`, both written atomically.

Plain Python and numpy; TensorFlow only through the Predictor; no Streamlit.
"""

import contextlib
import csv
import io
import os
import tempfile
import time
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl.errors import DownloadError, UserError
from tl.images import IMAGE_EXTENSIONS, ImageError, decode_image, is_junk, resize_bilinear
from tl.predict import DEFAULT_TOP_K, DRAFT_SIZE, HeadResult, Prediction, check_top_k
from tl.text import shown

BATCH_SIZE = 32  # photos per engine pass
UNKNOWN_FOLDER = "_unknown"  # the sorted zip's folder of photos that look like none of the classes
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


@dataclass
class Row:
    """One photo's answer: ``prediction`` or, for a photo that cannot be read, ``error``."""

    file: str
    prediction: Prediction | None = None
    error: str | None = None
    features: np.ndarray | None = field(default=None, repr=False)  # pooled, where asked for (keep_features)

    @property
    def label(self) -> str | None:
        """The top class, or ``None`` for an unreadable photo."""
        return None if self.prediction is None else self.prediction.transfer.labels[0]

    @property
    def confidence(self) -> float | None:
        """The calibrated probability of the top class."""
        return None if self.prediction is None else self.prediction.confidence

    @property
    def unknown(self) -> bool | None:
        """"None of my classes" by the run's rule; ``None`` when the run cannot tell."""
        return None if self.prediction is None else self.prediction.unknown

    @property
    def novelty(self) -> float | None:
        """The run's novelty score of the photo (higher is stranger); ``None`` without a rule."""
        return None if self.prediction is None else self.prediction.novelty

    @property
    def top_k(self) -> list:
        """``[(label, probability), ...]``, most likely first."""
        if self.prediction is None:
            return []
        return list(zip(self.prediction.transfer.labels, self.prediction.transfer.scores))

    def as_json(self) -> dict:
        """What ``tl predict --json`` prints for the photo."""
        if self.prediction is None:
            return {"file": self.file, "error": self.error}
        return self.prediction.as_json(self.file)


@dataclass
class Classified:
    """What :func:`classify` did: the rows in input order, how many photos it was given,
    and whether it stopped early (``should_stop``)."""

    rows: list = field(default_factory=list)
    total: int = 0
    stopped: bool = False

    @property
    def unreadable(self) -> list:
        return [row for row in self.rows if row.error is not None]


# -- inputs ----------------------------------------------------------------------------

def folder_photos(folder) -> list:
    """``(path relative to folder, path)`` of every image under ``folder``, recursively,
    sorted; hidden files and folders and OS clutter (:func:`tl.images.is_junk`) are skipped.

    Raises:
        UserError: the folder does not exist, is not a folder, or holds no images.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(f"The folder '{shown(folder)}' {what}; give the path of a folder of photos.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for filename in filenames:
            if not is_junk(filename) and Path(filename).suffix.lower() in IMAGE_EXTENSIONS:
                path = Path(dirpath) / filename
                found.append((path.relative_to(root).as_posix(), path))
    if not found:
        raise UserError(f"The folder '{shown(folder)}' holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                        "give a folder of photos.")
    return sorted(found)


@contextlib.contextmanager
def zip_photos(source, name: str = "The zip"):
    """``with zip_photos(path or bytes) as photos:`` the zip's images as :func:`folder_photos`
    gives a folder's (names as inside the zip), extracted by :func:`tl.ingest.extract_images`
    (the upload's entry checks and limits) into a temporary folder removed on leaving.

    Raises:
        DataError: the zip is unreadable, unsafe (odd paths, links, a bomb), over a limit,
            or holds no images; the temporary folder is removed.
    """
    from tl.ingest import extract_images

    with tempfile.TemporaryDirectory(prefix="tl-batch-") as folder:
        extract_images(source, folder, name=name)
        yield folder_photos(folder)


# -- classifying -----------------------------------------------------------------------

@dataclass
class _Stage:
    """One engine pass: its runner, the resize layer its input goes through, and which of
    its outputs each head reads (``None``: the only one)."""

    runner: object
    resize: object
    heads: dict  # "transfer" / "imagenet" -> (output index or None, head model)


def _stages(predictor, imagenet: bool) -> list:
    transfer, other = predictor.transfer_path, predictor.imagenet_path
    heads = {"transfer": (transfer.index, transfer.head)}
    stages = [_Stage(transfer.runner, transfer.features.get_layer("resize"), heads)]
    if imagenet and other is not None:
        if predictor.shared:
            heads["imagenet"] = (other.index, other.head)
        else:
            stages.append(_Stage(other.runner, other.features.get_layer("resize"),
                                 {"imagenet": (other.index, other.head)}))
    return stages


def _prepared(source, name: str, stages) -> list | str:
    """The photo resized for each stage, or the sentence saying why it cannot be read."""
    try:
        image = decode_image(source, name=shown(name), draft_size=DRAFT_SIZE)
    except ImageError as exc:
        return str(exc)
    return [_resized(image, stage.resize) for stage in stages]


def _resized(image, layer) -> np.ndarray:
    """``image`` as the model's ``resize`` layer would make it: Pillow's anti-aliased bilinear
    (:func:`tl.images.resize_bilinear`, the same pixels to about 0.003 of 255, a third of the
    time, outside the GIL) for the layer every model here starts with, else the layer's own
    function."""
    if (layer.interpolation == "bilinear" and layer.antialias and not layer.crop_to_aspect_ratio
            and not layer.pad_to_aspect_ratio and layer.height == layer.width):
        return resize_bilinear(image, layer.height)
    batch = np.asarray(image, dtype=np.float32)[None]
    return np.asarray(layer.transform_images(batch, training=False))[0]


def iter_batches(predictor, photos, *, k: int = DEFAULT_TOP_K, pass_rate: float | None = None,
                 imagenet: bool = False, batch_size: int = BATCH_SIZE, workers: int | None = None,
                 keep_features: bool = False):
    """Yield the :class:`Row` of each batch of ``photos`` in turn (input order).

    Args:
        predictor: a :class:`tl.predict.Predictor`.
        photos: ``(name, bytes or path)`` pairs.
        k: classes per photo, 1 to ``tl.predict.MAX_TOP_K``.
        pass_rate: the strictness of "none of my classes" (:meth:`Predictor.judge`).
        imagenet: also answer with the backbone's ImageNet head (free where the run shares
            the backbone pass, a second pass otherwise); without it a row's ``imagenet`` is
            ``None``.
        batch_size: photos per engine pass.
        workers: decoding threads (default: the CPU count, at most 4).
        keep_features: also keep each row's pooled features (the transferred head's input,
            as the run's novelty rule reads them) in ``Row.features``.

    Leaving the loop early stops the decoding too.
    """
    k = check_top_k(k)
    stages = _stages(predictor, imagenet)
    pending, source = deque(), iter(photos)
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        def fill():  # keep two batches decoding ahead of the model
            for name, data in source:
                pending.append((name, pool.submit(_prepared, data, name, stages)))
                if len(pending) >= 2 * batch_size:
                    return

        try:
            fill()
            while pending:
                chunk = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                fill()
                yield _rows(predictor, stages, [(name, future.result()) for name, future in chunk],
                            k, pass_rate, imagenet, keep_features)
        finally:
            for _, future in pending:
                future.cancel()


def classify(predictor, photos, *, k: int = DEFAULT_TOP_K, pass_rate: float | None = None,
             imagenet: bool = False, batch_size: int = BATCH_SIZE, workers: int | None = None,
             on_progress=None, should_stop=None) -> Classified:
    """Classify every photo of ``photos`` (see :func:`iter_batches` for the arguments).

    Args:
        on_progress: called with ``(done, total)`` before the first batch and after each.
        should_stop: checked between batches; when it returns true the rows so far are
            returned with ``stopped=True``.
    """
    photos = list(photos)
    result = Classified(total=len(photos))
    if on_progress:
        on_progress(0, result.total)
    batches = iter_batches(predictor, photos, k=k, pass_rate=pass_rate, imagenet=imagenet,
                           batch_size=batch_size, workers=workers)
    try:
        for rows in batches:
            result.rows += rows
            if on_progress:
                on_progress(len(result.rows), result.total)
            if should_stop and len(result.rows) < result.total and should_stop():
                result.stopped = True
                break
    finally:
        batches.close()
    return result


def _rows(predictor, stages, prepared, k: int, pass_rate, imagenet: bool, keep_features: bool = False) -> list:
    """The rows of one batch: every readable photo through each stage once."""
    good = [i for i, (_, item) in enumerate(prepared) if not isinstance(item, str)]
    rows = [Row(name, error=item if isinstance(item, str) else None) for name, item in prepared]
    if not good:
        return rows
    probs, seconds, features, backbone_seconds = {}, {}, None, None
    for number, stage in enumerate(stages):
        started = time.perf_counter()
        outputs = stage.runner(np.stack([prepared[i][1][number] for i in good]))
        if predictor.shared:
            backbone_seconds = (time.perf_counter() - started) / len(good)
        for kind, (index, head) in stage.heads.items():
            read = outputs if index is None else outputs[index]
            features = read if kind == "transfer" else features
            probs[kind] = np.asarray(head.predict_on_batch(read), dtype=np.float64)
            seconds[kind] = (time.perf_counter() - started) / len(good)
    novelty = None if predictor.rule is None else predictor.rule.scores(np.asarray(features))
    pooled = None
    if keep_features:
        pooled = np.asarray(features, dtype=np.float32)
        pooled = (pooled.mean(axis=(1, 2)) if pooled.ndim == 4 else pooled).reshape(len(good), -1)
    for j, i in enumerate(good):
        if pooled is not None:
            rows[i].features = pooled[j]
        transfer = _top(probs["transfer"][j], predictor.class_names, k, seconds["transfer"])
        answer, reason = None, predictor.imagenet_reason
        if "imagenet" in probs:
            answer, reason = _imagenet(probs["imagenet"][j], k, seconds["imagenet"])
        elif reason is None:
            reason = "The ImageNet head was not asked for in this batch."
        prediction = Prediction(transfer, answer, reason, predictor.shared, backbone_seconds,
                                None if novelty is None else float(novelty[j]))
        rows[i].prediction = predictor.judge(prediction, pass_rate)
    return rows


def _top(probs, class_names, k: int, seconds: float) -> HeadResult:
    order = np.argsort(-probs, kind="stable")[:k]  # the order Predictor.predict gives
    return HeadResult([class_names[i] for i in order], [float(probs[i]) for i in order], probs, seconds)


def _imagenet(probs, k: int, seconds: float) -> tuple:
    """``(HeadResult or None, reason or None)`` of the ImageNet head's probabilities."""
    from tl.imagenet_labels import decode

    try:
        decoded = decode(probs, k)
    except DownloadError as exc:
        return None, f"No ImageNet column: {exc}"
    return HeadResult([name for name, _ in decoded], [score for _, score in decoded], probs, seconds), None


# -- outputs ---------------------------------------------------------------------------

def csv_text(rows) -> str:
    """The rows as CSV: ``file, class, confidence, unknown, novelty``, then ``class_1, prob_1``
    ... for the top-k, then ``error`` (the reason of an unreadable photo, whose other cells are
    empty). ``unknown`` is ``true``/``false``, empty when the run cannot tell. A text cell that
    a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) gets a
    leading ``'``."""
    rows = list(rows)
    k = max((len(row.top_k) for row in rows), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "class", "confidence", "unknown", "novelty"]
                    + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "prob")] + ["error"])
    for row in rows:
        if row.prediction is None:
            writer.writerow([_cell(row.file)] + [""] * (4 + 2 * k) + [_cell(row.error)])
            continue
        pairs = [cell for label, prob in row.top_k for cell in (_cell(label), f"{prob:.6f}")]
        pairs += [""] * (2 * k - len(pairs))
        unknown = "" if row.unknown is None else str(row.unknown).lower()
        novelty = "" if row.novelty is None else f"{row.novelty:.6f}"
        writer.writerow([_cell(row.file), _cell(row.label), f"{row.confidence:.6f}", unknown, novelty]
                        + pairs + [""])
    return out.getvalue()


def write_csv(rows, out) -> Path:
    """Write :func:`csv_text` of ``rows`` to ``out`` atomically; return the path."""
    from tl.files import atomic_write_bytes

    atomic_write_bytes(out, csv_text(rows).encode("utf-8"))
    return Path(out)


def sorted_zip(rows, source_of, out) -> dict:
    """Write a zip of the classified photos sorted into one folder per class (``UNKNOWN_FOLDER``
    for those that look like none of the classes), atomically; unreadable photos are left out.
    Two photos with one file name in one folder get `` (2)``, `` (3)``... before the suffix.

    Args:
        rows: :class:`Row` s.
        source_of: the photo's bytes or path, given its ``Row.file``.
        out: the zip to write.

    Returns:
        folder -> number of photos in it.
    """
    labels = {row.label for row in rows if row.prediction is not None}
    unknown = UNKNOWN_FOLDER
    while unknown in labels:
        unknown += "_"
    counts, used = {}, set()
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:  # photos do not compress
                for row in rows:
                    if row.prediction is None:
                        continue
                    folder = unknown if row.unknown else _folder_name(row.label)
                    arcname = _free_name(folder, Path(row.file).name, used)
                    data = source_of(row.file)
                    archive.writestr(arcname, data if isinstance(data, bytes) else Path(data).read_bytes())
                    counts[folder] = counts.get(folder, 0) + 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return counts


def _folder_name(label: str) -> str:
    """A class name as one safe path component of a zip."""
    name = str(label).replace("/", "_").replace("\\", "_").strip()
    return "_" if name in ("", ".", "..") else name


def _free_name(folder: str, filename: str, used: set) -> str:
    stem, suffix = os.path.splitext(filename)
    candidate, n = f"{folder}/{filename}", 1
    while candidate.lower() in used:
        n += 1
        candidate = f"{folder}/{stem} ({n}){suffix}"
    used.add(candidate.lower())
    return candidate


def _cell(text) -> str:
    text = "" if text is None else str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text
