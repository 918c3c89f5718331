"""The run folder on disk: config, status, events, history, metrics, labels and the model.

``<root>/<run id>/`` where the root is ``--runs-dir``, else ``$TL_RUNS_DIR``, else
``./runs``. Every file is written atomically (temp file + rename); the event log is
append-only, one whole line per write.
"""

import json
import os
import secrets
import shutil
import time
from datetime import datetime
from pathlib import Path

from tl.config import RunConfig
from tl.errors import ConfigError, RunNotFound, UserError
from tl.files import append_jsonl, atomic_write_json, os_error_sentence, read_jsonl
from tl.paths import runs_root
from tl.processes import process_start, same_process

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
DAMAGED = "damaged"  # read, never written: a file of the run folder cannot be used
_MISSING = object()


class RunDamaged(UserError):
    """A file of a run folder is unreadable, not JSON, or not what it should hold."""


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

    # reading: every file is checked, a damaged one raises RunDamaged naming it
    def _json(self, name: str, kind: type, default=_MISSING):
        """The parsed ``name`` if it holds a ``kind``; ``default`` when the file is missing."""
        path = self.path / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            if default is _MISSING:
                raise RunDamaged(f"Run {self.id} is damaged: its {name} is missing; delete the run.") from None
            return default
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            raise RunDamaged(f"Run {self.id} is damaged: its {name} cannot be read ({reason}); fix the file's "
                             "permissions or delete the run.") from None
        try:
            value = json.loads(text)
        except ValueError:
            raise RunDamaged(f"Run {self.id} is damaged: its {name} is not valid JSON (cut short or edited?); "
                             "delete the run or restore the file.") from None
        if not isinstance(value, kind):
            raise RunDamaged(f"Run {self.id} is damaged: its {name} holds {type(value).__name__} where "
                             f"{'an object' if kind is dict else 'a list'} belongs; delete the run or restore the file.")
        return value

    @property
    def config(self) -> RunConfig:
        return self._config(self._json("config.json", dict))

    def _config(self, values: dict) -> RunConfig:
        try:
            return RunConfig.from_dict(values)
        except ConfigError as exc:
            raise RunDamaged(f"Run {self.id} is damaged: its config.json is not a valid run config "
                             f"({str(exc).rstrip('.')}); delete the run.") from None

    def status(self) -> dict:
        """The status record. A run marked running whose process is gone (or whose pid now
        belongs to another process: one that started at another time, or, in a record
        without the process's start time, after the run started) reads as failed; one
        whose status.json cannot be used reads as ``damaged``, with the reason."""
        try:
            record = self._json("status.json", dict, {"status": "queued"})
        except RunDamaged as exc:
            return {"status": DAMAGED, "reason": str(exc)}
        if record.get("status") not in STATUSES:
            return {"status": DAMAGED, "reason": f"Run {self.id} is damaged: its status.json holds no known "
                                                 "status; delete the run or restore the file."}
        if record.get("status") == "running" and not _alive(record.get("pid"), record.get("pid_start"),
                                                            record.get("started")):
            record = dict(record, status="failed",
                          reason="The training process stopped unexpectedly (it was killed or crashed).")
        return record

    @property
    def history(self) -> list:
        return self._json("history.json", list, [])

    @property
    def metrics(self) -> dict:
        return self._json("metrics.json", dict, {})

    @property
    def labels(self) -> list:
        names = self._json("labels.json", dict, {}).get("class_names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RunDamaged(f"Run {self.id} is damaged: its labels.json holds no list of class names; "
                             "delete the run.")
        return names

    @property
    def data_origin(self) -> dict | None:
        """Which made dataset and version the run trained on (``labels.json``'s ``origin``:
        kind, id, name, version), or ``None`` for other data and runs from before."""
        try:
            origin = self._json("labels.json", dict, {}).get("origin")
        except RunDamaged:
            return None
        return origin if isinstance(origin, dict) else None

    def damage(self) -> str | None:
        """The sentence saying which file of the run cannot be used, or ``None``."""
        status = self.status()
        if status["status"] == DAMAGED:
            return status["reason"]
        try:
            self.config, self.metrics, self.labels  # noqa: B018  (each reads and checks its file)
        except RunDamaged as exc:
            return str(exc)
        return None

    def load_model(self):
        """The saved model (images in, probabilities out), in safe mode, without optimizer.

        Raises:
            UserError: ``model.keras`` is missing or cannot be loaded, or ``config.json``
                does not describe it (see :meth:`config_mismatch`), in one sentence.
        """
        import keras

        problem = self.model_problem()
        if problem:
            raise UserError(problem)
        path = self.model_path
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:
            raise UserError(f"The model.keras of run '{self.id}' could not be loaded ({_short(exc)}); "
                            "train the run again.") from None
        problem = self.config_mismatch(model)
        if problem:
            raise RunDamaged(problem)
        return model

    def config_mismatch(self, model) -> str | None:
        """The sentence saying that ``config.json`` does not describe ``model`` (this run's
        loaded ``model.keras``: another backbone, strategy or input size), or ``None``.

        Classifying, exporting and reusing a run build on the backbone, strategy and size in
        its ``config.json``; one edited or copied from another run (``{}`` is a valid config:
        every default) would otherwise fail deep inside Keras. The model says what it is:
        :func:`tl.models.build_model` names it ``<backbone>_<strategy>``, and its backbone
        layer takes the training size."""
        cfg = self.config
        built = _model_description(model)
        if built == (cfg.backbone, cfg.strategy, cfg.image_size):
            return None
        backbone, strategy, size = built
        found = (f"a {backbone} backbone trained with strategy {strategy}" if strategy
                 else f"a model named '{backbone}'") + ("" if size is None else f", {size} px")
        return (f"Run {self.id} is damaged: its config.json (backbone {cfg.backbone}, strategy {cfg.strategy}, "
                f"{cfg.image_size} px) does not describe its model.keras ({found}); restore the config.json it "
                "was trained with, or delete the run.")

    def model_problem(self) -> str | None:
        """The sentence saying why ``model.keras`` cannot be used (missing, not a file, not
        a Keras archive), or ``None``: checked before loading, exporting or classifying."""
        import zipfile

        path = self.model_path
        if not os.path.lexists(path):
            return f"Run '{self.id}' has no model.keras; train it again."
        damaged = (f"The model.keras of run '{self.id}' is damaged ({{}}); train the run again.")
        if not path.is_file():
            return damaged.format("it is not a file")
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            return damaged.format("not a Keras archive: cut short or overwritten?")
        if not {"config.json", "metadata.json"} <= names:
            return damaged.format("a zip, but not a Keras model archive")
        return None

    def events(self, start: int = 0):
        """``(events, next_offset)`` from byte offset ``start`` of the event log."""
        return read_jsonl(self.events_path, start)

    def summary(self) -> dict:
        """One row for run lists: id, status, dataset, backbone, strategy, accuracy, time.
        A damaged run still gets its row, status ``damaged`` and the reason. Each file is
        read once (run lists call this for every run on every page rerun)."""
        status = self.status()
        problem = status["reason"] if status["status"] == DAMAGED else None  # first, as damage() says
        try:
            cfg = self._json("config.json", dict)
        except RunDamaged as exc:
            cfg, problem = {}, problem or str(exc)
        metrics, origin = {}, None
        if problem is None:
            try:
                self._config(cfg)
                metrics, _ = self.metrics, self.labels
                origin = self.data_origin
            except RunDamaged as exc:
                problem = str(exc)
        if problem:
            status, metrics = {"status": DAMAGED, "reason": problem}, {}
        started, finished = status.get("started"), status.get("finished")
        number = (int, float)
        duration = ((finished or time.time()) - started
                    if isinstance(started, number) and isinstance(finished or 0, number) else None)
        return {
            "run_id": self.id,
            "name": str(cfg.get("name", "")),
            "status": status.get("status"),
            "reason": status.get("reason"),
            "dataset": cfg.get("dataset"),
            "data_version": (origin or {}).get("version"),  # of a made dataset, the one trained on
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
        try:
            record = self._json("status.json", dict, {})
        except RunDamaged:
            record = {}  # a new status replaces a damaged one
        if "pid" in fields and "pid_start" not in fields:  # so a reused pid is not taken for the owner
            fields["pid_start"] = process_start(fields["pid"])
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


def _short(exc, limit: int = 160) -> str:
    """The first line of an exception's text, cut at a word boundary."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(text) <= limit:
        return text.rstrip(".")
    return text[:limit].rsplit(" ", 1)[0].rstrip(".,;:") + "..."


def _alive(pid, start=None, started=None) -> bool:
    if not pid:
        return True  # not started by a process we can check (e.g. just queued)
    return same_process(pid, start, running_since=started)  # started: for records without start


def _model_description(model) -> tuple:
    """``(backbone, strategy, input side)`` of a run's model, read from its name and its
    backbone layer: ``(model name, None, ...)`` for a name that is no backbone and
    strategy of the registries, ``None`` for the side of a model without a backbone layer."""
    from tl.backbones import BACKBONES
    from tl.strategies import STRATEGIES

    backbone, strategy = next(((b, s) for b in BACKBONES for s in STRATEGIES if model.name == f"{b}_{s}"),
                              (model.name, None))
    try:
        height, width = model.get_layer("backbone").input.shape[1:3]
    except ValueError:
        return backbone, strategy, None
    return backbone, strategy, height if height == width else f"{height} x {width}"


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.backbone}-{cfg.strategy}-{secrets.token_hex(2)}"


def create(cfg: RunConfig, runs_dir=None, run_id: str | None = None) -> Run:
    """Create a run folder with its config and status ``queued``, atomically.

    The folder is assembled under a hidden temporary name and renamed into place, so a
    crash never leaves a half-made run.
    """
    root = runs_root(runs_dir)
    run_id = run_id or new_run_id(cfg)
    final = root / run_id
    if final.exists():
        raise FileExistsError(f"Run '{run_id}' already exists in {root}.")
    tmp = root / f".{run_id}.creating"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        atomic_write_json(tmp / "config.json", cfg.to_dict())
        atomic_write_json(tmp / "status.json", {"status": "queued", "created": time.time(),
                                                "updated": time.time()})
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"The run could not be created: {os_error_sentence(exc, exc.filename or root)} "
                        "(The runs folder is --runs-dir, else $TL_RUNS_DIR, else ./runs.)") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def get(run_id: str, runs_dir=None) -> Run:
    """Return the run ``run_id`` or raise :class:`RunNotFound`."""
    root = runs_root(runs_dir)
    path = root / str(run_id)
    if not run_id or not isinstance(run_id, str) or "/" in run_id or run_id.startswith(".") or not _is_run(path):
        raise RunNotFound(f"There is no run '{run_id}' in {root}; `python -m tl runs` lists them.")
    return Run(path)


def _is_run(path: Path) -> bool:
    """A folder holding a config.json (even an unreadable one, or a folder in its place), or
    one that cannot even be looked into: listed as damaged rather than hidden."""
    try:
        return path.is_dir() and os.path.lexists(path / "config.json")
    except OSError:
        return True


def list_runs(runs_dir=None) -> list:
    """All runs, newest first (damaged ones included: their status says so).

    Raises:
        UserError: the runs folder (or a folder above it) is a file, or it cannot be listed.
    """
    root = runs_root(runs_dir)
    for path in (root, *root.parents):  # not made yet is empty; a file in the way is not
        if os.path.lexists(path):
            if not path.is_dir():
                where = "it is" if path == root else f"'{path}' is"
                raise UserError(f"The runs folder '{root}' cannot be used: {where} a file, not a folder; give "
                                "--runs-dir (or $TL_RUNS_DIR) a folder.")
            break
    try:
        if not root.is_dir():
            return []
        entries = list(root.iterdir())
    except OSError as exc:
        raise UserError(f"The runs folder cannot be listed: {os_error_sentence(exc, root, 'read')}") from None
    found = [Run(p) for p in entries if not p.name.startswith(".") and _is_run(p)]
    return sorted(found, key=lambda run: run.id, reverse=True)


def delete(run_id: str, runs_dir=None) -> None:
    """Delete a run folder (after checking it is one), damaged or not. Only the folder: what
    the run kept elsewhere (a made dataset's photos) is freed by :func:`tl.jobs.delete_run`,
    the layer that deletes runs for a user.

    Raises:
        UserError: it cannot be moved away (permissions, read-only disk), in one sentence.
    """
    run = get(run_id, runs_dir)
    trash = run.path.with_name(f".{run.id}.deleting")
    try:
        os.rename(run.path, trash)  # vanish from listings at once, then remove
    except OSError as exc:
        raise UserError(f"Run {run.id} could not be deleted: {os_error_sentence(exc, run.path)}") from None
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(runs_dir=None, older_than: float = 600.0) -> list:
    """Remove what killed processes left in the runs folder: half-deleted runs
    (``.<id>.deleting``) and runs never finished being created (``.<id>.creating``, older
    than ``older_than`` seconds). Returns the paths removed."""
    root = runs_root(runs_dir)
    removed = []
    try:
        entries = list(root.iterdir()) if root.is_dir() else []
    except OSError:
        return removed
    for path in entries:
        try:
            stale = path.name.endswith(".deleting") or (
                path.name.endswith(".creating") and time.time() - path.stat().st_mtime > older_than)
        except OSError:
            continue
        if path.name.startswith(".") and stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
