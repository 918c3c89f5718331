"""Work in a process of its own for the app (checking a dataset, classifying many photos),
never the page's own thread. Each piece of work has a folder::

    request.json   what to do (written by the page)
    status.json    queued | running | done | failed | cancelled, the process's pid and
                   start, times, a reason
    events.jsonl   progress, one JSON object a line
    <name>.log     what the process printed (a traceback when it failed unexpectedly)

:class:`Job` reads the folder (fresh on every call: another session may run it); a running
job whose process is gone reads as failed. Stop is a SIGTERM, which :func:`serve` turns into
the work's ``should_stop``. :func:`spawn` starts the process, :func:`serve` runs in it.
Plain Python: no TensorFlow here.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tl.errors import Cancelled, UserError
from tl.files import atomic_write_json, read_json, read_jsonl
from tl.processes import own_record, same_process

REPO = Path(__file__).resolve().parents[1]  # the process runs `-m <module>` from here
ACTIVE = ("queued", "running")
NICE = 10  # below the app's server, like the training workers (tl/jobs.py)
STOPPED = "Stopped by the user."


class Job:
    """One piece of background work's folder. Subclasses say what it is in ``died`` and
    ``damaged`` (one sentence each) and may clean up in :meth:`stopped`."""

    died = "Its process stopped unexpectedly (it was killed or ran out of memory); start it again."
    damaged = "Its status file is damaged; start it again."
    unknown_status = "queued"  # what a folder without a status file reads as

    def __init__(self, path):
        self.path = Path(path)

    def status(self) -> dict:
        """The status record; a running job whose process is gone reads as failed."""
        try:
            record = read_json(self.path / "status.json", {"status": self.unknown_status})
        except (OSError, ValueError):
            return {"status": "failed", "reason": self.damaged}
        if not isinstance(record, dict):
            return {"status": "failed", "reason": self.damaged}
        if record.get("status") in ACTIVE and record.get("pid") and not same_process(
                record.get("pid"), record.get("pid_start"), running_since=record.get("started")):
            record = dict(record, status="failed", reason=self.died)
        return record

    def events(self) -> list:
        try:
            return read_jsonl(self.path / "events.jsonl")[0]
        except OSError:
            return []

    def stop(self) -> None:
        """Ask the process to stop (SIGTERM; it stops at its next poll) and record it."""
        record = self.status()
        if record.get("status") in ACTIVE and record.get("pid") and same_process(
                record["pid"], record.get("pid_start"), running_since=record.get("started")):
            try:
                os.kill(int(record["pid"]), signal.SIGTERM)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
        if record.get("status") in ACTIVE:
            write_status(self.path, "cancelled", reason=STOPPED, finished=time.time())
            self.stopped()

    def stopped(self) -> None:
        """Called after a stop was recorded (nothing by default)."""


def write_status(path: Path, status: str, **fields) -> None:
    """Merge ``fields`` into the folder's status record, atomically; a folder that went away
    records nothing."""
    try:
        record = read_json(Path(path) / "status.json", {})
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    try:
        atomic_write_json(Path(path) / "status.json", {**record, **fields, "status": status})
    except OSError:
        pass


def spawn(path: Path, module: str, log) -> int:
    """Start ``python -m <module> <path>`` in a session of its own, its output to ``log`` (an
    open binary file, closed here), and record it as running. Returns its pid.

    Raises:
        OSError: it could not start.
    """
    with log:
        process = subprocess.Popen([sys.executable, "-m", module, str(path)], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    write_status(path, "running", pid=process.pid, started=time.time())
    return process.pid


def start(path: Path, module: str, request: dict, *, what: str, log_name: str, memory_mb=None,
          seconds=None, reserve_as: str = "", fresh: bool = True) -> int:
    """The app's side: write the job folder (``request.json``, status queued; emptied first
    when ``fresh``), start ``python -m <module>`` on it (:func:`spawn`) and reserve
    ``memory_mb`` for it in the app's budget (``reserve_as`` says for what, ``seconds`` how
    long it should take). Returns the pid.

    Raises:
        UserError: one sentence beginning with ``what`` ("Measuring", "The check") when the
            folder cannot be written or the process cannot start.
    """
    import shutil

    from tl import memory
    from tl.files import os_error_sentence

    path = Path(path)
    try:
        if fresh:
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        atomic_write_json(path / "request.json", request)
        write_status(path, "queued", created=time.time())
        log = open(path / log_name, "ab")
    except OSError as exc:
        raise UserError(f"{what} could not start: {os_error_sentence(exc, path)}") from None
    try:
        pid = spawn(path, module, log)
    except OSError as exc:
        write_status(path, "failed", reason=f"{what} could not start ({exc.strerror or exc}).")
        raise UserError(f"{what} could not start ({exc.strerror or exc}); try again.") from None
    if memory_mb is not None:
        memory.reserve(pid, memory_mb, reserve_as or what, time.time() + seconds if seconds else None)
    return pid


def serve(path, body, what: str, log_name: str, on_failure=None) -> int:
    """The process's side: SIGTERM sets the stop flag, the process runs at a lower priority,
    then ``body(request, should_stop)`` does the work and returns true when done, false when
    stopped (a :class:`tl.errors.Cancelled` means stopped too). Its end is recorded: done,
    cancelled, or failed with one sentence (a UserError's own; else ``what`` failed
    unexpectedly, and the traceback goes to the log). ``on_failure()`` cleans up after a
    failure. Returns the process's exit code."""
    path = Path(path)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        os.nice(NICE)
    except (OSError, AttributeError):
        pass
    write_status(path, "running", started=time.time(), **own_record())
    try:
        done = body(read_json(path / "request.json"), lambda: bool(stopping))
    except Cancelled:
        done = False
    except UserError as exc:
        if on_failure:
            on_failure()
        write_status(path, "failed", reason=str(exc), finished=time.time())
        return 2
    except Exception as exc:  # noqa: BLE001 - the page shows the reason; the log keeps the traceback
        import traceback

        traceback.print_exc()
        if on_failure:
            on_failure()
        write_status(path, "failed", finished=time.time(),
                     reason=f"{what} failed unexpectedly ({type(exc).__name__}: {str(exc)[:160]}); "
                            f"its log is {path / log_name}.")
        return 1
    if not done:
        write_status(path, "cancelled", reason=STOPPED, finished=time.time())
        return 0
    write_status(path, "done", finished=time.time())
    return 0
