"""A pool of unlabeled photos for a run, stored under the data root and ranked by how much
each would teach it (:mod:`tl.suggest`): a few dozen in the page, more in a process of their
own (``python -m tl.pool_jobs DIR``), never the page's own thread.

One upload ranked for one run at one strictness lives in ``<data root>/pools/<run>-<key>/``
(the key names the upload's bytes and the strictness, as :func:`tl.batch_jobs.upload_key`), so
the ranking is found again after a reload, in another session, or with no upload at all
(:func:`latest`)::

    photos/        the pool's photos, kept: a tap adds one to the dataset from here
    request.json   the run, its runs folder, the strictness, how many photos
    status.json    queued | running | done | failed | cancelled, pid, times, reason
    events.jsonl   progress: ``{"done", "total"}`` after each batch
    ranking.json   :meth:`tl.suggest.Ranking.as_json`, every photo, best first
    added.json     the photos already added to the dataset

Pools count towards the data root's disk cap (:mod:`tl.data.quota`): room is made before one
is stored, and an idle pool is the first thing removed when an upload needs the space. A pool
holds at most ``LIMIT`` photos. Plain Python: TensorFlow only comes with the
:class:`tl.predict.Predictor` in the process.
"""

import shutil
import sys
import time
from pathlib import Path

from tl.background import start as start_process, write_status
from tl.batch_jobs import PhotosJob, require_finished
from tl.errors import UserError
from tl.files import atomic_write_json, os_error_sentence, read_json
from tl.paths import data_root

LIMIT = 2000  # photos in one pool
FOLDER = "pools"
DIED = "Ranking stopped unexpectedly (its process was killed or ran out of memory); upload the pool again."
DAMAGED = "The pool's status file is damaged; upload the pool again."


def pools_root(runs_dir=None) -> Path:
    """``<data root>/pools``."""
    return data_root(runs_dir) / FOLDER


class PoolJob(PhotosJob):
    """One pool's folder (another session may rank it or add from it)."""

    died = DIED
    damaged = DAMAGED
    unknown_status = None
    verb = "ranked"

    def ranking(self):
        """The finished :class:`tl.suggest.Ranking`, or ``None``."""
        from tl.suggest import Ranking

        try:
            return Ranking.from_json(read_json(self.path / "ranking.json"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def added(self) -> list:
        """The pool's photos already added to the dataset."""
        try:
            found = read_json(self.path / "added.json", [])
        except (OSError, ValueError):
            return []
        return [str(name) for name in found] if isinstance(found, list) else []

    def mark_added(self, file: str) -> None:
        atomic_write_json(self.path / "added.json", sorted(set(self.added()) | {file}))

    def photo(self, file: str) -> bytes:
        """The bytes of the pool's photo ``file`` (a name its ranking gave).

        Raises:
            UserError: it is not in the pool any more.
        """
        path = (self.photos / file).resolve()
        if self.photos.resolve() not in path.parents:
            raise UserError(f"'{file}' is not a photo of this pool.")
        try:
            return path.read_bytes()
        except OSError:
            raise UserError(f"The pool's photo '{file}' is gone (the pool was removed to make room); "
                            "upload the pool again.") from None

    def touch(self) -> None:
        """Mark the pool as used now: the disk cap removes the longest-unused pools first."""
        from tl.data.quota import touch

        touch(self.path)


def find(run, key: str, runs_dir=None) -> PoolJob:
    """The pool ``key`` (:func:`tl.batch_jobs.upload_key`) of ``run``, stored or not."""
    return PoolJob(pools_root(runs_dir) / f"{run.id}-{key}")


def latest(run, runs_dir=None) -> PoolJob | None:
    """The pool of ``run`` uploaded or used last (any strictness), or ``None``."""
    try:
        found = [p for p in pools_root(runs_dir).glob(f"{run.id}-*") if p.is_dir()]
    except OSError:
        return None
    found = [p for p in found if (p / "status.json").exists()]
    return PoolJob(max(found, key=lambda p: p.stat().st_mtime)) if found else None


def prepare(run, key: str, source, runs_dir=None) -> tuple:
    """``(job, number of photos)``: the pool's folder holding the photos, after room was made
    for them under the disk cap. ``source``: a zip's bytes or ``(name, bytes)`` pairs. On any
    error nothing is left behind.

    Raises:
        UserError: the run is not finished, the pool is over ``LIMIT`` photos, the zip is
            refused (the ingest's sentence), there is no room under the cap (a
            :class:`tl.errors.DataError`), or the folder cannot be written.
    """
    from tl.batch_jobs import store_photos
    from tl.data.quota import make_room

    require_finished(run, "rank photos for it")
    needed = len(source) if isinstance(source, (bytes, bytearray)) else sum(len(data) for _, data in source)
    make_room(data_root(runs_dir), needed, runs_dir, what="This pool of photos")
    job = find(run, key, runs_dir)
    try:
        shutil.rmtree(job.path, ignore_errors=True)
        total = store_photos(source, job.photos)
        if total > LIMIT:
            raise UserError(f"The pool holds {total:,} photos; rank at most {LIMIT:,} at a time (split it, or use "
                            "`python -m tl suggest RUN --folder DIR`, which takes any number).")
        atomic_write_json(job.path / "request.json", {"run_id": run.id, "runs_dir": str(Path(run.path).parent),
                                                      "total": total})
    except OSError as exc:
        discard(job)
        raise UserError(f"The pool could not be stored: {os_error_sentence(exc, job.path)}") from None
    except BaseException:
        discard(job)
        raise
    return job, total


def discard(job: PoolJob) -> None:
    """Remove the pool's folder (photos and all)."""
    shutil.rmtree(job.path, ignore_errors=True)


def rank_job(job: PoolJob, predictor, pass_rate, on_progress=None, should_stop=None) -> bool:
    """Rank the pool's photos with ``predictor`` and write ``ranking.json`` (in the page for
    a few photos, in the process for more). Raises :class:`tl.errors.Cancelled` when stopped."""
    from tl.batch import folder_photos
    from tl.suggest import suggest

    ranking = suggest(predictor, folder_photos(job.photos), top=None, pass_rate=pass_rate,
                      on_progress=on_progress, should_stop=should_stop)
    atomic_write_json(job.path / "ranking.json", ranking.as_json())
    return True


def rank_here(job: PoolJob, predictor, pass_rate, on_progress=None) -> None:
    """Rank a few photos in the caller's thread (the page's), recorded as a finished job; on
    any error the pool is removed."""
    try:
        write_status(job.path, "running", started=time.time(), pass_rate=pass_rate)
        rank_job(job, predictor, pass_rate, on_progress=on_progress)
        write_status(job.path, "done", finished=time.time())
    except BaseException:
        discard(job)
        raise


def start(job: PoolJob, pass_rate: float | None, total: int, estimate_mb: float | None = None) -> PoolJob:
    """Rank the pool in a process of its own; ``estimate_mb`` (when the app starts it) must fit
    the app's budget now and is reserved while the process lives.

    Raises:
        UserError: the process cannot start, or a :class:`tl.run_cost.BudgetError` (the pool
            is removed either way).
    """
    from tl import memory

    try:
        if estimate_mb is not None:
            memory.need(estimate_mb, "Ranking these photos")
        request = {**read_json(job.path / "request.json"), "pass_rate": pass_rate}
        start_process(job.path, "tl.pool_jobs", request, what="Ranking", log_name="pool.log",
                      memory_mb=estimate_mb, seconds=30 + 0.2 * total, reserve_as="ranking photos", fresh=False)
    except BaseException:
        discard(job)
        raise
    return job


def work(path) -> int:
    """The process: rank the pool in ``path`` and record how it ended."""
    job = PoolJob(path)
    return job.serve(lambda predictor, pass_rate, should_stop, on_progress: rank_job(
        job, predictor, pass_rate, on_progress=on_progress, should_stop=should_stop),
        "Ranking", "pool.log", "rank photos for it")


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
