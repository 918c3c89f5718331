"""The run folder on disk: config, status, events, history, metrics, labels and the model.

``<root>/<run id>/`` where the root is ``--runs-dir``, else ``$TL_RUNS_DIR``, else
``./runs``. Every file is written atomically (temp file + rename); the event log is
append-only, one whole line per write.
"""

import os
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path

from tl.config import RunConfig
from tl.errors import RunNotFound, UserError
from tl.files import append_jsonl, atomic_write_json, read_json, read_jsonl
from tl.paths import cache_root, runs_root  # noqa: F401  (runs.runs_root / runs.cache_root)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


class Run:
    """One run folder. Cheap to create; every property reads the disk afresh."""

    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.name

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # paths
    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    # reading
    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(read_json(self.path / "config.json"))

    def status(self) -> dict:
        """The status record. A run marked running whose process is gone reads as failed."""
        record = read_json(self.path / "status.json", {"status": "queued"})
        if record.get("status") == "running" and not _alive(record.get("pid")):
            record = dict(record, status="failed",
                          reason="The training process stopped unexpectedly (it was killed or crashed).")
        return record

    @property
    def history(self) -> list:
        return read_json(self.path / "history.json", [])

    @property
    def metrics(self) -> dict:
        return read_json(self.path / "metrics.json", {})

    @property
    def labels(self) -> list:
        return read_json(self.path / "labels.json", {}).get("class_names", [])

    def load_model(self):
        """The saved model (images in, probabilities out), in safe mode, without optimizer.

        Raises:
            UserError: ``model.keras`` is missing or cannot be loaded, in one sentence.
        """
        import keras

        try:
            return keras.saving.load_model(self.model_path, safe_mode=True, compile=False)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise UserError(f"The model of run '{self.id}' could not be loaded ({first}); "
                            "train it again.") from None

    def events(self, start: int = 0):
        """``(events, next_offset)`` from byte offset ``start`` of the event log."""
        return read_jsonl(self.events_path, start)

    def summary(self) -> dict:
        """One row for run lists: id, status, dataset, backbone, strategy, accuracy, time."""
        cfg = read_json(self.path / "config.json", {})
        status = self.status()
        metrics = self.metrics
        started, finished = status.get("started"), status.get("finished")
        duration = (finished or time.time()) - started if started else None
        return {
            "run_id": self.id,
            "name": cfg.get("name", ""),
            "status": status.get("status"),
            "reason": status.get("reason"),
            "dataset": cfg.get("dataset"),
            "backbone": cfg.get("backbone"),
            "strategy": cfg.get("strategy"),
            "head": cfg.get("head"),
            "tags": cfg.get("tags", []),
            "test_accuracy": metrics.get("test_accuracy"),
            "created": status.get("created"),
            "duration": duration,
        }

    # writing
    def set_status(self, status: str, **fields) -> dict:
        """Write a new status (and any extra fields), keeping earlier fields."""
        if status not in STATUSES:
            raise ValueError(f"Expected status to be one of {STATUSES}. Received: {status!r}.")
        record = read_json(self.path / "status.json", {})
        record.update(fields, status=status, updated=time.time())
        if status in FINISHED:
            record.setdefault("finished", time.time())
        atomic_write_json(self.path / "status.json", record)
        return record

    def event(self, event_type: str, **fields) -> dict:
        """Append one event to ``events.jsonl`` and return it."""
        record = {"t": round(time.time(), 3), "type": event_type, **fields}
        append_jsonl(self.events_path, record)
        return record

    def write_json(self, name: str, obj) -> None:
        atomic_write_json(self.path / name, obj)

    # cancellation: a marker file, so any process (app, CLI, another tab) can ask
    def request_cancel(self) -> None:
        (self.path / "cancel").touch()

    def cancel_requested(self) -> bool:
        return (self.path / "cancel").exists()


def _alive(pid) -> bool:
    if not pid:
        return True  # not started by a process we can check (e.g. just queued)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.backbone}-{cfg.strategy}-{secrets.token_hex(2)}"


def create(cfg: RunConfig, runs_dir=None, run_id: str | None = None) -> Run:
    """Create a run folder with its config and status ``queued``, atomically.

    The folder is assembled under a hidden temporary name and renamed into place, so a
    crash never leaves a half-made run.
    """
    root = runs_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    run_id = run_id or new_run_id(cfg)
    final = root / run_id
    if final.exists():
        raise FileExistsError(f"Run '{run_id}' already exists in {root}.")
    tmp = root / f".{run_id}.creating"
    tmp.mkdir()
    try:
        atomic_write_json(tmp / "config.json", cfg.to_dict())
        atomic_write_json(tmp / "status.json", {"status": "queued", "created": time.time(),
                                                "updated": time.time()})
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def get(run_id: str, runs_dir=None) -> Run:
    """Return the run ``run_id`` or raise :class:`RunNotFound`."""
    root = runs_root(runs_dir)
    path = root / run_id
    if not run_id or "/" in run_id or run_id.startswith(".") or not (path / "config.json").is_file():
        raise RunNotFound(f"There is no run '{run_id}' in {root}; `python -m tl runs` lists them.")
    return Run(path)


def list_runs(runs_dir=None) -> list:
    """All runs, newest first."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return []
    found = [Run(p) for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()]
    return sorted(found, key=lambda run: run.id, reverse=True)


def delete(run_id: str, runs_dir=None) -> None:
    """Delete a run folder (after checking it is one)."""
    run = get(run_id, runs_dir)
    trash = run.path.with_name(f".{run.id}.deleting")
    os.rename(run.path, trash)  # vanish from listings at once, then remove
    shutil.rmtree(trash, ignore_errors=True)
