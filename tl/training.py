"""Compile, fit and evaluate one run, writing progress events into its folder.

:func:`prepare` checks a config (data, weights) and creates the run folder;
:func:`execute` trains it. The CLI, the app's job manager and the tests all go through
these two functions. This module owns a run's lifecycle (its status, its split and labels
records, the notes before it trains); the model and its phases are the
:class:`tl.learner.Learner`'s.
"""

import time
import traceback

from tl import calibration, cluster, datasets, run_cost, runs, update
from tl.backbones import check_installed_weights
from tl.config import RunConfig
from tl.data import made
from tl.errors import Cancelled, TrainingFailed, UserError
from tl.files import os_error_sentence
from tl.learner import MAX_EPOCHS, Learner
from tl.strategies import STRATEGIES
from tl.trust import fit_trust
from tl.weights import source_run


# -- entry points ----------------------------------------------------------------------

def prepare(cfg: RunConfig, runs_dir=None, run_id: str | None = None, data=None,
            in_use_mb: float = 0.0) -> "runs.Run":
    """Check that ``cfg`` can run (data readable, weights reference valid), then create
    its run folder with status ``queued``, its estimate recorded (``estimate_mb``,
    ``estimate_seconds``). ``data``: the config's dataset when the caller has already loaded
    it (the app's preview, a sweep), so it is not read again. ``in_use_mb``: memory the
    caller holds that the budget must also cover (the app's server, :mod:`tl.memory`).

    Raises:
        UserError: with one sentence, before any folder is made (a
            :class:`tl.run_cost.BudgetError` when the run would not fit the memory budget).
    """
    cfg = cfg.resolved()  # the run folder records the strategy's defaults it ran with
    data = datasets.load(cfg, runs_dir) if data is None else data
    if cfg.weights.startswith("run:") and STRATEGIES[cfg.strategy].pretrained:
        source_run(cfg, runs_dir)
    if cfg.weights == "imagenet" and STRATEGIES[cfg.strategy].pretrained:
        check_installed_weights(cfg.backbone)
    found = run_cost.check(cfg, len(data), in_use_mb=in_use_mb,  # $TL_MEMORY_BUDGET_MB, e.g. on Community Cloud
                           cached=_cached_photos(cfg, data, runs_dir))
    run = runs.create(cfg, runs_dir, run_id)
    run.set_status("queued", estimate_mb=round(found.memory_mb), estimate_seconds=round(found.seconds))
    if data.skipped:
        run.event("log", message=datasets.skipped_message(data.skipped))
    return run


def _cached_photos(cfg, data, runs_dir) -> int:
    """How many of the photos a strategy on cached features will read from the cache rather
    than pass through the backbone (0 for the others, or when the cache cannot be read)."""
    from tl.backbones import cut_layer
    from tl.features import cached_count
    from tl.paths import cache_root
    from tl.strategies import head_on_features
    from tl.weights import initial_weights

    if not head_on_features(cfg.strategy, cfg.head):
        return 0
    try:
        _, weights = initial_weights(cfg, runs_dir)
        return cached_count(data, root=cache_root(runs_dir), backbone=cfg.backbone, weights=weights,
                            cut=cut_layer(cfg.backbone, STRATEGIES[cfg.strategy].cut), image_size=cfg.image_size)
    except (OSError, UserError):
        return 0


def execute(run: "runs.Run", runs_dir=None, on_event=None) -> dict:
    """Train ``run`` to the end and return its final status record.

    Never raises for problems inside training: they end the run as ``failed`` (with the
    reason) or ``cancelled``; history and events written so far are kept. A run whose
    folder disappears mid-training (deleted) ends quietly with status ``deleted``.

    Raises:
        UserError: the run is not waiting to be trained (done, failed, running in another
            process, damaged): it is never trained twice, so a finished model is never
            overwritten.
    """
    check_trainable(run)
    cfg = run.config
    # Keep a start time the job manager already set (the wait for TensorFlow counts).
    started = run.status().get("started") or time.time()
    run.set_status("running", pid=_pid(), started=started)
    emit = _emitter(run, on_event)
    emit("status", status="running")
    try:
        metrics = _train(run, cfg, runs_dir, emit)
    except Cancelled:
        return _finish(run, emit, "cancelled", "Stopped by the user.")
    except (TrainingFailed, UserError) as exc:
        return _finish(run, emit, "failed", str(exc))
    except OSError as exc:  # the disk: full, read-only, the folder deleted
        return _finish(run, emit, "failed", os_error_sentence(exc, exc.filename or run.path))
    except Exception as exc:  # a bug: keep the traceback for the report
        _write_quietly(run.path / "error.log", traceback.format_exc())
        reason = f"Unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        return _finish(run, emit, "failed", reason)
    return _finish(run, emit, "done", test_accuracy=metrics["test_accuracy"])


def check_trainable(run) -> None:
    """Raise a one-sentence :class:`UserError` unless ``run`` is queued, or marked running
    by the job manager for this very process (it sets the worker's pid before it starts)."""
    import os

    status = run.status()
    state = status.get("status")
    if state == "queued" or (state == "running" and status.get("pid") == os.getpid()):
        return
    if state == runs.DAMAGED:
        raise UserError(f"{status['reason']} It was not trained.")
    raise UserError(f"Run {run.id} is {state}, not queued, so it is not trained (again): a finished run keeps "
                    "its model; train a new run instead.")


def _finish(run, emit, status: str, reason: str | None = None, **fields) -> dict:
    """Record the final status; a run folder deleted meanwhile is left deleted."""
    if reason is not None:
        fields["reason"] = reason
    if not run.path.is_dir():
        return {"status": "deleted", "reason": "The run folder was deleted while it trained."}
    try:
        emit("status", status=status, **fields)
        return run.set_status(status, **fields)
    except OSError as exc:  # the disk is full or gone: say so where the caller can see it
        return {"status": "failed", "reason": os_error_sentence(exc, exc.filename or run.path)}


def _write_quietly(path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError:
        pass


def _pid():
    import os

    return os.getpid()


def _emitter(run, on_event):
    def emit(event_type, **fields):
        record = run.event(event_type, **fields)
        if on_event:
            on_event(record)
        return record

    return emit


def _train(run, cfg, runs_dir, emit) -> dict:
    import keras

    from tl import devices

    cfg = cfg.resolved()  # configs written before defaults were per strategy hold every value

    strategy, device = devices.setup()
    emit("device", **device)
    if "role" in device:  # one worker of a cluster: the run it trains is the chief's
        emit("cluster", chief_run_id=cluster.chiefs_text(run.id), **cluster.role().as_record())
    keras.utils.set_random_seed(cfg.seed)
    data = datasets.load(cfg, runs_dir)
    run.write_json("labels.json", {"class_names": data.class_names, "dataset": data.name,
                                   "counts": data.counts(), **_origin_record(data)})
    run.write_json("split.json", split_record(data))
    made.record_use(data, run.path)  # a made dataset keeps these photos while the run exists
    emit("data", classes=data.num_classes, images=len(data),
         **{split: len(idx) for split, idx in data.splits.items()})
    note = short_epochs_note(cfg, len(data.splits["train"]))
    if note:
        emit("log", message=note)

    with strategy.scope():
        learner = Learner(cfg, run, data, device, runs_dir, emit)
        started = time.time()
        STRATEGIES[cfg.strategy].run(learner, cfg)
        learner.train_seconds = time.time() - started
        learner.restore_best()
        trust = fit_trust(learner, cfg.seed)
        learner.temperature = trust.temperature
        metrics = learner.evaluate()
        metrics["calibration"] = trust.calibration_record(learner.raw_test_probs, data.labels[data.splits["test"]])
        test_probs = calibration.scale(learner.raw_test_probs, trust.temperature or 1.0)
        metrics["novelty"] = trust.novelty_record(test_probs.max(axis=1))
        unknown = (None if trust.rule is None or trust.test_scores is None
                   else trust.rule.unknown(trust.test_scores, test_probs.max(axis=1)))
        metrics.update(update.recorded(cfg, data, test_probs, unknown, split_record(data), runs_dir))
        learner.save_model()
        trust.save(run.path)
    run.write_json("metrics.json", metrics)
    return metrics


def split_record(data) -> dict:
    """What ``split.json`` holds: the data's fingerprint, where it came from (a made
    dataset's id and version), each split's keys and, where known, each item's content hash
    (aligned with the keys)."""
    record = {"fingerprint": data.fingerprint, **_origin_record(data)}
    record.update({split: [data.keys[i] for i in idx] for split, idx in data.splits.items()})
    if data.content_hashes is not None:
        record["content_hashes"] = {split: [data.content_hashes[i] for i in idx]
                                    for split, idx in data.splits.items()}
    return record


def _origin_record(data) -> dict:
    """``{"origin": ...}`` for a versioned dataset (its folder left out: it is this
    machine's), else nothing."""
    if not data.origin:
        return {}
    return {"origin": {k: v for k, v in data.origin.items() if k != "path"}}


# -- notes -----------------------------------------------------------------------------

def short_epochs_note(cfg: RunConfig, train_size: int) -> str | None:
    """The one-line note for epochs that look too short to converge: fewer optimiser steps
    than the strategy's default step floor would have given (typed epochs turn the floor
    off, see :meth:`RunConfig.resolved`). ``None`` when they are not, or when no phase takes
    steps over them (a head fitted exactly)."""
    from tl.strategies import fitted_exactly

    cfg = cfg.resolved()
    spec = STRATEGIES[cfg.strategy]
    floor = spec.defaults["min_steps"]
    epochs = getattr(cfg, cfg.stretched_epochs)
    if not floor or not epochs or (spec.uses_features and fitted_exactly(cfg.strategy, cfg.head)):
        return None
    per_epoch = max(1, -(-train_size // cfg.batch_size))
    planned = min(max(epochs, -(-cfg.min_steps // per_epoch)), MAX_EPOCHS)  # as Learner._epochs_for
    if planned * per_epoch >= floor:
        return None
    return (f"{planned} epoch(s) of {per_epoch} step(s) are {planned * per_epoch} optimiser steps, fewer than the "
            f"{floor} {cfg.strategy} takes by default, so training may stop before it converges: --min-steps "
            f"{floor} (in the app, 'At least this many steps') adds epochs until there are that many.")
