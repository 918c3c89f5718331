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
that died without a final status reads as failed (:mod:`tl.background` holds what the
check and the other background work share). Plain Python: no TensorFlow here.
"""

import hashlib
import json
import sys
from pathlib import Path

from tl import background
from tl.background import ACTIVE, Job, serve
from tl.files import append_jsonl, atomic_write_json, read_json

DIED = "The check's process stopped unexpectedly (it was killed or ran out of memory); start it again."


def check_key(cfg, fingerprint: str) -> str:
    """Names a check: its settings and the data's fingerprint."""
    text = json.dumps({"config": cfg.to_dict(), "data": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class CheckJob(Job):
    """One check's folder, read fresh on every call (another session may run it)."""

    died = DIED
    damaged = "The check's status file is damaged; start it again."

    @property
    def key(self) -> str:
        return self.path.name

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
    background.start(path, "tl.check_jobs", {"config": cfg.to_dict(), "about": about,
                                  "runs_dir": str(Path(runs_dir).resolve()) if runs_dir else None},
          what="The check", log_name="check.log", memory_mb=estimate and estimate.memory_mb,
          seconds=estimate and estimate.seconds, reserve_as="a data check")
    return CheckJob(path)


def work(path) -> int:
    """The check process: run the request in ``path`` and record how it ended."""
    path = Path(path)

    def check(request, should_stop) -> bool:
        from tl.check import run_check
        from tl.config import RunConfig

        result = run_check(RunConfig.from_dict(request["config"]), request.get("runs_dir"),
                           on_event=lambda event: append_jsonl(path / "events.jsonl", event), should_stop=should_stop)
        atomic_write_json(path / "result.json", result.to_dict())
        return True

    return serve(path, check, "The check", "check.log")


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
