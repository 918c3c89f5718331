"""Checks of a dataset in the background, for the app: one ``python -m tl.check_jobs DIR``
process per check, never the page's own thread.

A check lives in ``<cache root>/checks/<key>/``, the key naming its settings and the
data's fingerprint (a made dataset's new version, or a changed folder, is a new key), so a
finished check is shown again at once after a reload or in another session::

    request.json   the check's config
    status.json    queued | running | done | failed | cancelled, pid, times, reason
    events.jsonl   progress: the feature pass, each fold, each stage
    result.json    the :class:`tl.check.CheckResult`

Stop is a SIGTERM, which the process turns into the check's ``should_stop``. A process
that died without a final status reads as failed. Plain Python: no TensorFlow here.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tl.errors import UserError
from tl.files import append_jsonl, atomic_write_json, os_error_sentence, read_json, read_jsonl
from tl.processes import own_record, same_process

REPO = Path(__file__).resolve().parents[1]
ACTIVE = ("queued", "running")
DIED = "The check's process stopped unexpectedly (it was killed or ran out of memory); start it again."


def check_key(cfg, fingerprint: str) -> str:
    """Names a check: its settings and the data's fingerprint."""
    text = json.dumps({"config": cfg.to_dict(), "data": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class CheckJob:
    """One check's folder, read fresh on every call (another session may run it)."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def key(self) -> str:
        return self.path.name

    def status(self) -> dict:
        """The status record; a running check whose process is gone reads as failed."""
        try:
            record = read_json(self.path / "status.json", {"status": "queued"})
        except (OSError, ValueError):
            return {"status": "failed", "reason": "The check's status file is damaged; start it again."}
        if not isinstance(record, dict):
            return {"status": "failed", "reason": "The check's status file is damaged; start it again."}
        if record.get("status") in ACTIVE and record.get("pid") and not same_process(
                record.get("pid"), record.get("pid_start"), running_since=record.get("started")):
            record = dict(record, status="failed", reason=DIED)
        return record

    def events(self) -> list:
        try:
            return read_jsonl(self.path / "events.jsonl")[0]
        except OSError:
            return []

    def progress(self) -> tuple:
        """``(share done 0..1, one line saying what is happening)`` from the events."""
        share, text = 0.0, "Starting (loading TensorFlow and the data)..."
        for event in self.events():
            kind = event.get("type")
            if kind == "data":
                text = f"{event.get('images')} images in {event.get('classes')} classes."
            elif kind == "features" and event.get("images"):
                done = event.get("done", event.get("images")) if event.get("cache") != "hit" else event["images"]
                share = 0.7 * min(done / max(event["images"], 1), 1.0)
                text = f"Backbone features: {done} of {event['images']} images" + (
                    " (cached)" if event.get("cache") == "hit" else "") + "."
            elif kind == "fold":
                share = 0.7 + 0.25 * event["fold"] / max(event["folds"], 1)
                text = f"Judging each photo with a head that never saw it: fold {event['fold']} of {event['folds']}."
            elif kind == "stage":
                share = max(share, 0.95)
                text = f"Looking for {event['stage']}..." if event["stage"] != "map" else "Drawing the map..."
        return share, text

    def result(self):
        """The finished :class:`tl.check.CheckResult`, or ``None``."""
        from tl.check import CheckResult

        try:
            record = read_json(self.path / "result.json")
        except (OSError, ValueError):
            return None
        return CheckResult.from_dict(record) if isinstance(record, dict) else None

    def stop(self) -> None:
        """Ask the check to stop (SIGTERM; it stops at its next poll)."""
        record = self.status()
        if record.get("status") in ACTIVE and record.get("pid"):
            if same_process(record["pid"], record.get("pid_start"), running_since=record.get("started")):
                try:
                    os.kill(int(record["pid"]), signal.SIGTERM)
                except (ProcessLookupError, PermissionError, ValueError):
                    pass
        if record.get("status") in ACTIVE:
            _write_status(self.path, "cancelled", reason="Stopped by the user.", finished=time.time())


def checks_root(runs_dir=None) -> Path:
    from tl.paths import cache_root

    return cache_root(runs_dir) / "checks"


def find(cfg, fingerprint: str, runs_dir=None) -> CheckJob | None:
    """The check of these settings and data, if one was started."""
    path = checks_root(runs_dir) / check_key(cfg, fingerprint)
    return CheckJob(path) if (path / "request.json").is_file() else None


def latest(about: str, runs_dir=None) -> CheckJob | None:
    """The newest finished check started ``about`` something (a made dataset's id), of
    any version: shown, marked as earlier, while the current version has none."""
    best, when = None, -1.0
    try:
        folders = list(checks_root(runs_dir).iterdir())
    except OSError:
        return None
    for folder in folders:
        try:
            if read_json(folder / "request.json", {}).get("about") != about:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        status = CheckJob(folder).status()
        if status.get("status") == "done" and float(status.get("finished") or 0) > when:
            best, when = CheckJob(folder), float(status.get("finished") or 0)
    return best


def start(cfg, fingerprint: str, runs_dir=None, about: str | None = None, estimate=None) -> CheckJob:
    """Start checking in a process of its own (a check of the same settings and data that
    is running already is returned as it is; a finished one is started afresh).

    Args:
        estimate: the check's :class:`tl.run_cost.Estimate`, when the app starts it: it must
            fit the app's memory budget beside the server and what runs now
            (:func:`tl.memory.need`), and is reserved while the process lives.

    Raises:
        UserError: the cache folder cannot be written, or the process cannot start; a
            :class:`tl.run_cost.BudgetError` when it would not fit the budget now.
    """
    from tl import memory

    job = find(cfg, fingerprint, runs_dir)
    if job is not None and job.status().get("status") in ACTIVE:
        return job
    if estimate is not None:
        memory.need(estimate.memory_mb, "Checking this dataset")
    path = checks_root(runs_dir) / check_key(cfg, fingerprint)
    try:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        atomic_write_json(path / "request.json", {"config": cfg.to_dict(), "about": about,
                                                  "runs_dir": str(Path(runs_dir).resolve()) if runs_dir else None})
        _write_status(path, "queued", created=time.time())
        log = open(path / "check.log", "ab")
    except OSError as exc:
        raise UserError(f"The check could not start: {os_error_sentence(exc, path)}") from None
    try:
        with log:
            process = subprocess.Popen([sys.executable, "-m", "tl.check_jobs", str(path)], cwd=REPO, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        _write_status(path, "failed", reason=f"The check's process could not start ({exc.strerror or exc}).")
        raise UserError(f"The check's process could not start ({exc.strerror or exc}); try again.") from None
    _write_status(path, "running", pid=process.pid, started=time.time())
    if estimate is not None:
        memory.reserve(process.pid, estimate.memory_mb, "a data check", time.time() + estimate.seconds)
    return CheckJob(path)


def _write_status(path: Path, status: str, **fields) -> None:
    try:
        record = read_json(path / "status.json", {})
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    try:
        atomic_write_json(path / "status.json", {**record, **fields, "status": status})
    except OSError:
        pass  # a folder that went away: the check is gone, nothing to record


def work(path) -> int:
    """The check process: run the request in ``path`` and record how it ended."""
    from tl.check import run_check
    from tl.config import RunConfig
    from tl.errors import Cancelled

    path = Path(path)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        os.nice(10)  # below the app's server, like the training workers (tl/jobs.py)
    except (OSError, AttributeError):
        pass
    request = read_json(path / "request.json")
    _write_status(path, "running", started=time.time(), **own_record())

    def on_event(event):
        append_jsonl(path / "events.jsonl", event)

    try:
        result = run_check(RunConfig.from_dict(request["config"]), request.get("runs_dir"), on_event=on_event,
                           should_stop=lambda: bool(stopping))
    except Cancelled:
        _write_status(path, "cancelled", reason="Stopped by the user.", finished=time.time())
        return 0
    except UserError as exc:
        _write_status(path, "failed", reason=str(exc), finished=time.time())
        return 2
    except Exception as exc:  # noqa: BLE001 - the page shows the reason; the log keeps the traceback
        import traceback

        traceback.print_exc()
        _write_status(path, "failed", finished=time.time(),
                      reason=f"The check failed unexpectedly ({type(exc).__name__}: {str(exc)[:160]}); "
                             f"its log is {path / 'check.log'}.")
        return 1
    atomic_write_json(path / "result.json", result.to_dict())
    _write_status(path, "done", finished=time.time())
    return 0


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
