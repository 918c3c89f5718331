"""Background training for the app: a queue, and one worker process per run.

Each run trains in its own ``python -m tl worker RUN_ID`` process, the same code path as
the CLI, so a crash or an out-of-memory kill ends one run, never the app, and stopping a
run is a signal. At most ``max_parallel`` workers run at once (one training per device);
the other runs wait in a first-in, first-out queue.

What the app shows is read from the run folders (:mod:`tl.runs`). The manager only
decides when to start workers, and records what happened to those that died without
writing their own final status.

With a memory budget (``$TL_MEMORY_BUDGET_MB``) and ``app_memory``, the app's manager
counts its own process too (:mod:`tl.memory`): a run that could not fit beside the server
is refused at submit; one that fits alone but not beside the workers and checks running now
waits at the head of the queue (its log says so) and starts once they have ended. Workers
run at a lower CPU priority (``nice`` 10), so the pages people click stay quick while a
run trains.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tl import cluster, memory, run_cost, runs, training
from tl.data import made
from tl.errors import ConfigError, RunNotFound, UserError
from tl.files import os_error_sentence, read_json
from tl.paths import runs_root
from tl.processes import own_record, same_process

REPO = Path(__file__).resolve().parents[1]  # the worker runs `-m tl` from here
KILL_AFTER_SECONDS = 30
EXITED = "The training process exited unexpectedly (exit code {code}); its progress so far is kept."
DIED = "The training process stopped unexpectedly (it was killed or crashed)."
CANCELLED_QUEUED = "Cancelled before it started."
CANCELLED_RUNNING = "Stopped by the user."
STALE_CLAIM_SECONDS = 60  # an ownerless claim marker this old is left over from a killed manager

log = logging.getLogger(__name__)


class _Job:
    """One worker. ``process`` is None for a worker an earlier app process started (it
    outlives the app, being in its own session), which we can watch only by pid."""

    def __init__(self, run, process=None, pid=None, pid_start=None, started=None):
        self.run, self.process = run, process
        self.pid = process.pid if process else pid
        self.pid_start, self.started = pid_start, started  # started: for records without pid_start
        self.kill_at = None  # set by cancel: when to SIGKILL a worker that has not stopped

    def signal(self, signum) -> None:
        """Signal the worker; an adopted one only while its pid is still that process (a
        pid reused by another program is never signalled)."""
        if self.process is not None or same_process(self.pid, self.pid_start, running_since=self.started):
            _signal(self.pid, signum)

    def finished(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None  # also reaps it (no zombie left)
        return self.run.status().get("status") != "running"  # reads failed once the pid is gone


class JobManager:
    """Runs training jobs in background processes, ``max_parallel`` at a time.

    Thread-safe: one manager can serve every session of the app. On construction it
    adopts the runs folder as it is: queued runs join the queue (oldest first), workers
    still alive from an earlier app process keep their slot, and runs marked running
    whose process is gone are marked failed.

    Args:
        runs_dir: the runs folder (default: ``$TL_RUNS_DIR``, else ``./runs``).
        max_parallel: how many workers may run at once (default: ``$TL_MAX_JOBS``, else 1).
        poll_seconds: how often the background thread checks the workers.
        app_memory: count this process (the app's server, its caches) in the memory
            budget of the runs it starts (the app; not tests or scripts).

    Raises:
        ConfigError: ``max_parallel`` (or ``$TL_MAX_JOBS``) is not a whole number >= 1.
    """

    def __init__(self, runs_dir=None, max_parallel=None, poll_seconds=0.5, app_memory=False):
        self.root = runs_root(runs_dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"The runs folder cannot be used: {os_error_sentence(exc, self.root)} (Set "
                            "TL_RUNS_DIR to a writable folder.)") from None
        self.max_parallel = _max_parallel(max_parallel)
        self.poll_seconds = poll_seconds
        self.app_memory = app_memory
        self._waiting = set()  # queued runs told they wait for memory
        self._lock = threading.Lock()
        self._queue = []  # run ids, next first
        self._jobs = {}  # run id -> _Job, in start order
        self._closed = False
        self._adopt()
        self.poll()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tl-jobs", daemon=True)
        self._thread.start()

    # -- public API ----------------------------------------------------------------------

    def submit(self, cfg, data=None, owner=None) -> runs.Run:
        """Create a run for ``cfg`` (status queued) and start it when a slot is free;
        ``data`` is the config's dataset if the caller has it loaded already; ``owner``: the
        digest of the submitting session's owner token (:mod:`tl.owners`), recorded in the
        run folder before the run is queued.

        Returns:
            The new :class:`tl.runs.Run`.

        Raises:
            UserError: the config cannot run (checked before any folder is made).
        """
        from tl import owners

        held = memory.floor_mb() if self.app_memory and run_cost.budget_mb() else 0.0
        run = training.prepare(cfg, self.root, data=data, in_use_mb=held)  # may read the data: outside the lock
        owners.record_run(run.path, owner)
        with self._lock:
            self._queue.append(run.id)
            self._start_queued()
        return run

    def cancel(self, run_id: str) -> None:
        """Cancel a run: a queued one is taken off the queue and marked cancelled; a
        running one is asked to stop (it stops at the next batch, keeping its history)
        and killed if it has not stopped ``KILL_AFTER_SECONDS`` later. Other runs: no-op.
        """
        with self._lock:
            if run_id in self._queue:
                self._queue.remove(run_id)
                runs.Run(self.root / run_id).set_status("cancelled", reason=CANCELLED_QUEUED)
            elif run_id in self._jobs and self._jobs[run_id].kill_at is None:
                job = self._jobs[run_id]
                # The marker file reaches the training loop at the next batch; the signal
                # also stops a worker still starting up (before its handler is installed).
                job.run.request_cancel()
                job.signal(signal.SIGTERM)
                job.kill_at = time.time() + KILL_AFTER_SECONDS

    def delete(self, run_id: str) -> None:
        """Stop a run (as :meth:`cancel`) and delete it with what it kept (:func:`delete_run`)."""
        self.cancel(run_id)
        delete_run(run_id, self.root)

    def queue(self) -> list:
        """Ids of the runs waiting to start, next first."""
        with self._lock:
            return list(self._queue)

    def running(self) -> list:
        """Ids of the runs whose worker is running (including ones asked to stop)."""
        with self._lock:
            return list(self._jobs)

    def position(self, run_id: str):
        """1-based place of ``run_id`` in the queue, or None when it is not waiting."""
        with self._lock:
            return self._queue.index(run_id) + 1 if run_id in self._queue else None

    def poll(self) -> None:
        """One round of the background thread: reap workers that exited, mark those that
        died without a final status as failed (or cancelled, if a cancel was asked),
        kill workers that ignored a cancel, then start queued runs in free slots."""
        with self._lock:
            for run_id, job in list(self._jobs.items()):
                if job.finished():
                    del self._jobs[run_id]
                    memory.unreserve(job.pid)
                    _record_exit(job)
                elif job.kill_at is not None and time.time() >= job.kill_at:
                    job.signal(signal.SIGKILL)  # reaped and recorded next round
            self._start_queued()

    def shutdown(self, cancel_running: bool = False) -> None:
        """Stop the background thread; start nothing more.

        Queued runs stay queued on disk and running workers keep going (the next manager
        adopts both), unless ``cancel_running``: then running workers are cancelled and
        waited for (killed after ``KILL_AFTER_SECONDS``).
        """
        with self._lock:
            self._closed = True
        self._stop.set()
        self._thread.join()
        if not cancel_running:
            return
        for run_id in self.running():
            self.cancel(run_id)
        deadline = time.time() + KILL_AFTER_SECONDS + 10
        while self.running() and time.time() < deadline:
            self.poll()
            time.sleep(0.1)

    # -- internals -----------------------------------------------------------------------

    def _adopt(self):
        """Take the runs folder as it is (a damaged run is left alone, listed as damaged),
        after removing what killed processes left behind."""
        runs.remove_leftovers(self.root)
        queued = []
        for run in runs.list_runs(self.root):
            status = run.status()
            created = status.get("created")
            if status["status"] == "queued":
                queued.append((created if isinstance(created, (int, float)) else 0, run.id))
            elif status["status"] == "running" and status.get("pid"):
                self._jobs[run.id] = _Job(run, pid=status["pid"], pid_start=status.get("pid_start"),
                                          started=status.get("started"))  # it holds the device
                memory.reserve(status["pid"], status.get("estimate_mb") or run_cost.BASE_MB, f"training run {run.id}")
            elif _on_disk(run) == "running":  # Run.status() said failed: make it permanent
                run.set_status("failed", reason=status.get("reason") or DIED)
        self._queue = [run_id for _, run_id in sorted(queued)]

    def _start_queued(self):
        # Called with the lock held.
        while self._queue and not self._closed and len(self._jobs) < self.max_parallel:
            run_id = self._queue.pop(0)
            try:
                run = runs.get(run_id, self.root)
            except RunNotFound:
                continue  # deleted while it waited
            status = run.status()
            if status.get("status") != "queued":
                continue  # cancelled meanwhile
            if not self._room_for(run, status):
                self._queue.insert(0, run_id)  # first in line when memory frees up
                return
            if not _claim(run):
                continue  # taken by another manager on the same folder
            job = self._spawn(run)
            if job:
                self._jobs[run_id] = job

    def _spawn(self, run):
        command = [sys.executable, "-m", "tl", "worker", run.id, "--runs-dir", str(self.root)]
        try:
            with open(run.path / "worker.log", "ab") as out:
                # Own session: a Ctrl-C or a restart of the app does not kill the training.
                # No TF_CONFIG: the app's runs train here, never as one worker of a cluster
                # (a cluster run is started with `python -m tl train` on each machine).
                process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           env=cluster.environment_without_cluster())
        except OSError as exc:
            run.set_status("failed", reason=f"The training process could not start: {exc}.")
            return None
        # Before the worker writes its own status (it first imports TensorFlow, seconds),
        # so the run shows as running at once and an early death is noticed.
        status = run.set_status("running", pid=process.pid, started=time.time())
        expected = status.get("estimate_seconds")
        memory.reserve(process.pid, status.get("estimate_mb") or run_cost.BASE_MB, f"training run {run.id}",
                       time.time() + expected if expected else None)
        return _Job(run, process)

    def _room_for(self, run, status) -> bool:
        """Whether ``run`` fits the memory budget beside what runs now (called with the
        lock held). Alone (no worker running) it is started after the server's caches are
        dropped: it was checked against the server's own memory at submit."""
        limit = run_cost.budget_mb() if self.app_memory else None
        if limit is None:
            return True
        need = status.get("estimate_mb") or run_cost.BASE_MB
        used = memory.in_use()
        if used["total"] + need <= limit:
            return True
        if not self._jobs:
            memory.release_caches()
            return True
        if run.id not in self._waiting:
            self._waiting.add(run.id)
            run.event("log", message=f"Waiting for memory: this run needs about {need:,.0f} MB and the app is using "
                                     f"{used['total']:,.0f} of its {limit:,.0f} MB ({run_cost.BUDGET_ENV}); it starts "
                                     "when the run training now has finished.")
        return False

    def _loop(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # keep polling: one odd run folder must not stop every job
                log.exception("Polling the training jobs failed")


def delete_run(run_id: str, runs_dir=None) -> None:
    """Delete a run for a user: its folder (:func:`tl.runs.delete`), then what it alone kept in
    a made dataset (photos removed from the dataset since it trained), which is freed now.

    Raises:
        UserError: the run folder cannot be moved away, in one sentence.
    """
    origin = runs.get(run_id, runs_dir).data_origin
    runs.delete(run_id, runs_dir)
    if origin:
        made.release(origin, runs_dir)


def _record_exit(job):
    """Give a final status to a run whose worker exited without writing one."""
    run = job.run
    if _on_disk(run) not in ("queued", "running"):
        return  # the worker wrote its own final status (or the folder was deleted)
    if run.cancel_requested():  # killed or signalled on our cancel before it could record it
        run.set_status("cancelled", reason=CANCELLED_RUNNING)
    elif job.process is not None:
        run.set_status("failed", reason=EXITED.format(code=job.process.returncode))
    else:
        run.set_status("failed", reason=run.status().get("reason") or DIED)


def _claim(run) -> bool:
    """Atomically mark ``run`` as taken, so two managers sharing a runs folder (two app
    processes) never both start it. The marker names its owner (pid and start time); a
    marker whose owner is gone (killed between claiming and starting the worker) is stale
    and is taken over, so the run does not stay queued for ever."""
    marker = run.path / "claimed"
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _stale_claim(marker):
                return False
            marker.unlink(missing_ok=True)  # then try once more: another manager may win the race
            continue
        except OSError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(own_record(), handle)
        return True
    return False


def _stale_claim(marker) -> bool:
    try:
        owner = json.loads(marker.read_text() or "{}")
    except (OSError, ValueError):
        owner = None
    if not isinstance(owner, dict) or "pid" not in owner:  # unreadable, or written before owners were recorded
        try:
            return time.time() - marker.stat().st_mtime > STALE_CLAIM_SECONDS
        except OSError:
            return False
    return not same_process(owner["pid"], owner.get("pid_start"))


def _on_disk(run):
    """The status as written, before Run.status() reads a dead running run as failed
    (``None`` when status.json is missing or damaged)."""
    try:
        record = read_json(run.path / "status.json", {})
    except (OSError, ValueError):
        return None
    return record.get("status") if isinstance(record, dict) else None


def _signal(pid, signum):
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, TypeError):
        pass  # already gone (or no pid known)


def _max_parallel(value) -> int:
    raw = value if value is not None else os.environ.get("TL_MAX_JOBS") or "1"
    try:
        count = int(str(raw).strip())
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"Expected TL_MAX_JOBS (max_parallel) to be a whole number of at least 1. "
                          f"Received: {raw!r}.")
    return count


def claim(run) -> bool:
    """Mark a queued ``run`` as taken by the caller, who will train it itself (the CLI's
    sweeps do), so no job manager on the same folder starts it. False if already taken."""
    return _claim(run)
