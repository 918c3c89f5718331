"""Classify a zip or a folder of photos for the app: a few dozen at once in the page, more in
a process of their own (``python -m tl.batch_jobs DIR``), never the page's own thread.

One upload classified by one run at one strictness lives in ``<run>/classified/<key>/``, the
key naming the upload's bytes and the strictness, so a finished result is shown again at once
after a reload or in another session::

    photos/        the uploaded photos (an extracted zip or the files), removed once classified
    request.json   the run, its runs folder, the strictness
    status.json    queued | running | done | failed | cancelled, pid, times, reason
    events.jsonl   progress: ``{"done", "total"}`` after each batch
    rows.json      one plain record per photo (file, class, confidence, unknown, top-k,
                   error, a small thumbnail as a data URI)
    answers.csv    :func:`tl.batch.csv_text`
    sorted.zip     :func:`tl.batch.sorted_zip`

Stop is a SIGTERM, which the process turns into :func:`tl.batch.classify`'s ``should_stop``.
A process that died without a final status reads as failed. Plain Python: no TensorFlow here
(it comes with the :class:`tl.predict.Predictor` in the process).
"""

import base64
import hashlib
import io
import shutil
import sys
import time
from pathlib import Path

from tl.background import Job, serve, spawn, write_status
from tl.errors import UserError
from tl.files import append_jsonl, atomic_write_json, os_error_sentence, read_json

INLINE_MAX = 24  # photos classified in the page; more go to a process of their own
THUMB_SIDE = 64
DIED = "Classifying stopped unexpectedly (its process was killed or ran out of memory); start it again."
DAMAGED = "The classification's status file is damaged; start it again."


def upload_key(digest: str, pass_rate: float | None) -> str:
    """Names one upload (the sha256 of its bytes) classified at one strictness."""
    return f"{digest[:20]}-{'none' if pass_rate is None else f'{pass_rate:g}'}"


class PhotosJob(Job):
    """A piece of background work over a folder of uploaded photos (``photos/``), read fresh on
    every call (another session may run it); its progress events count photos ``verb``."""

    verb = "classified"

    @property
    def photos(self) -> Path:
        return self.path / "photos"

    def progress(self) -> tuple:
        """``(share done 0..1, one line saying what is happening)``."""
        events = self.events()
        if not events:
            return 0.0, "Starting (loading TensorFlow and the run's model)..."
        done, total = events[-1]["done"], max(events[-1]["total"], 1)
        return min(done / total, 1.0), f"{done} of {total} photos {self.verb}."

    def stopped(self) -> None:
        shutil.rmtree(self.photos, ignore_errors=True)

    def serve(self, body, what: str, log_name: str, doing: str) -> int:
        """The process's side (:func:`tl.background.serve`): the request's run, which must be
        finished (``doing`` says for what), its :class:`tl.predict.Predictor`, then
        ``body(predictor, pass_rate, should_stop, on_progress)``; progress is appended to
        ``events.jsonl``, and the photos are removed if it fails."""
        def run_body(request, should_stop) -> bool:
            from tl import runs
            from tl.predict import Predictor

            run = runs.get(request["run_id"], request.get("runs_dir"))
            require_finished(run, doing)
            return body(Predictor(run), request.get("pass_rate"), should_stop,
                        lambda n, total: append_jsonl(self.path / "events.jsonl", {"done": n, "total": total}))

        return serve(self.path, run_body, what, log_name, on_failure=self.stopped)


def require_finished(run, doing: str) -> None:
    """Raises a UserError unless ``run`` has finished training (``doing``: "classify with it")."""
    if run.status().get("status") != "done":
        raise UserError(f"Run {run.id} has not finished training; {doing} once it is done.")


class BatchJob(PhotosJob):
    """One classification's folder."""

    died = DIED
    damaged = DAMAGED
    unknown_status = None

    def rows(self) -> list | None:
        """The finished rows (plain records), or ``None``."""
        try:
            rows = read_json(self.path / "rows.json")
        except (OSError, ValueError):
            return None
        return rows if isinstance(rows, list) else None


def find(run, key: str) -> BatchJob:
    """The classification ``key`` of ``run`` (a :class:`tl.runs.Run`), started or not."""
    return BatchJob(Path(run.path) / "classified" / key)


def prepare(run, key: str, source) -> tuple:
    """``(job, number of photos)``: a fresh folder for ``key`` holding the photos; ``source``
    is a zip's bytes (checked and extracted by :func:`tl.ingest.extract_images`) or
    ``(name, bytes)`` pairs. On any error nothing is left behind.

    Raises:
        UserError: the run is not finished, the zip is refused (no images, odd paths, a bomb,
            over a limit; the ingest's sentence), or the folder cannot be written.
    """
    require_finished(run, "classify with it")
    job = find(run, key)
    try:
        shutil.rmtree(job.path, ignore_errors=True)
        total = store_photos(source, job.photos)
        atomic_write_json(job.path / "request.json", {"run_id": run.id, "runs_dir": str(Path(run.path).parent)})
    except OSError as exc:
        shutil.rmtree(job.path, ignore_errors=True)
        raise UserError(f"The photos could not be stored: {os_error_sentence(exc, job.path)}") from None
    except BaseException:
        discard(job)
        raise
    return job, total


def store_photos(source, folder: Path) -> int:
    """Write ``source`` (a zip's bytes, checked and extracted by :func:`tl.ingest.extract_images`,
    or ``(name, bytes)`` pairs) into the new folder ``folder``; returns how many photos it holds.

    Raises:
        UserError: the zip is refused or no file is an image; OSError: it cannot be written.
    """
    from tl.batch import folder_photos
    from tl.ingest import extract_images

    folder.mkdir(parents=True)
    if isinstance(source, (bytes, bytearray)):
        extract_images(bytes(source), folder)
    else:
        _write_files(source, folder)
    return len(folder_photos(folder))


def discard(job: BatchJob) -> None:
    """Remove the job's folder (photos and all)."""
    shutil.rmtree(job.path, ignore_errors=True)


def _write_files(files, folder: Path) -> None:
    from tl.images import IMAGE_EXTENSIONS, is_junk

    used = set()
    for name, data in files:
        base = Path(str(name).replace("\\", "/")).name
        if not base or is_junk(base) or Path(base).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem, suffix, n = Path(base).stem, Path(base).suffix, 1
        while base.lower() in used:
            n += 1
            base = f"{stem} ({n}){suffix}"
        used.add(base.lower())
        (folder / base).write_bytes(data)
    if not used:
        raise UserError("None of the uploaded files is an image; upload photos or a zip of them.")


def start(job: BatchJob, pass_rate: float | None, total: int, estimate_mb: float | None = None) -> BatchJob:
    """Classify the job's photos in a process of their own.

    Args:
        estimate_mb: the process's memory, when the app starts it: it must fit the app's
            budget now (:func:`tl.memory.need`) and is reserved while the process lives.

    Raises:
        UserError: the process cannot start; a :class:`tl.run_cost.BudgetError` when it
            would not fit the budget now (the photos are removed).
    """
    from tl import memory

    try:
        if estimate_mb is not None:
            memory.need(estimate_mb, "Classifying these photos")
        request = read_json(job.path / "request.json")
        atomic_write_json(job.path / "request.json", {**request, "pass_rate": pass_rate, "total": total})
        write_status(job.path, "queued", created=time.time())
        log = open(job.path / "batch.log", "ab")
    except OSError as exc:
        shutil.rmtree(job.path, ignore_errors=True)
        raise UserError(f"Classifying could not start: {os_error_sentence(exc, job.path)}") from None
    except BaseException:
        shutil.rmtree(job.path, ignore_errors=True)
        raise
    try:
        pid = spawn(job.path, "tl.batch_jobs", log)
    except OSError as exc:
        shutil.rmtree(job.path, ignore_errors=True)
        raise UserError(f"Classifying could not start ({exc.strerror or exc}); try again.") from None
    if estimate_mb is not None:
        memory.reserve(pid, estimate_mb, "classifying photos", time.time() + 30 + 0.2 * total)
    return job


def classify_job(job: BatchJob, predictor, pass_rate, on_progress=None, should_stop=None) -> bool:
    """Classify the job's photos with ``predictor`` and write its rows, CSV and sorted zip
    (in the page for a few photos, in the process for more). Returns false when stopped
    (nothing written). The photos are removed either way."""
    from tl import batch

    try:
        photos = batch.folder_photos(job.photos)
        result = batch.classify(predictor, photos, pass_rate=pass_rate, on_progress=on_progress,
                                should_stop=should_stop)
        if result.stopped:
            return False
        paths = dict(photos)
        batch.sorted_zip(result.rows, lambda file: paths[file], job.path / "sorted.zip")
        batch.write_csv(result.rows, job.path / "answers.csv")
        atomic_write_json(job.path / "rows.json", [_record(row, paths[row.file]) for row in result.rows])
        return True
    finally:
        shutil.rmtree(job.photos, ignore_errors=True)


def classify_here(job: BatchJob, predictor, pass_rate, on_progress=None) -> None:
    """Classify a few photos in the caller's thread (the page's), recorded as a finished
    job; on any error the job's folder is removed."""
    try:
        classify_job(job, predictor, pass_rate, on_progress=on_progress)
        write_status(job.path, "done", finished=time.time())
    except BaseException:
        shutil.rmtree(job.path, ignore_errors=True)
        raise


def _record(row, path) -> dict:
    return {"file": row.file, "class": row.label, "confidence": row.confidence, "unknown": row.unknown,
            "top_k": [[label, float(p)] for label, p in row.top_k], "error": row.error,
            "thumb": None if row.error else _thumb(path)}


def _thumb(path) -> str | None:
    """A small JPEG of the photo as a data URI, for the table."""
    from PIL import Image

    from tl.images import ImageError, decode_image

    try:
        picture = Image.fromarray(decode_image(path, draft_size=THUMB_SIDE))
    except ImageError:
        return None
    picture.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def digest_of(source) -> str:
    """The sha256 of a zip's bytes or of ``(name, bytes)`` pairs (names and bytes, in order)."""
    sha = hashlib.sha256()
    if isinstance(source, (bytes, bytearray)):
        sha.update(source)
    else:
        for name, data in source:
            sha.update(hashlib.sha256(str(name).encode()).digest() + hashlib.sha256(data).digest())
    return sha.hexdigest()


def work(path) -> int:
    """The process: classify the photos of the job in ``path`` and record how it ended."""
    job = BatchJob(path)
    return job.serve(lambda predictor, pass_rate, should_stop, on_progress: classify_job(
        job, predictor, pass_rate, on_progress=on_progress, should_stop=should_stop),
        "Classifying", "batch.log", "classify with it")


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
