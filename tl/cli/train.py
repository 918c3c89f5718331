"""``python -m tl train`` and the hidden ``worker`` command (the app's job manager runs a
queued run with it): their parsers, the ``--flag`` per :class:`tl.config.RunConfig` field
that ``train`` and ``compare`` take (:func:`field_help`, :func:`config_from_args`), running a
run with its progress printed (:func:`format_event`), the signals that cancel it, and the
lower CPU priority of a worker."""

import argparse
import dataclasses
import json
import os
import signal
import sys
import typing

from tl.cli.common import EXIT_FAILED, JSON_PROGRESS_HELP, RUNS_DIR_HELP
from tl.cli.runs import fetch_with_progress, registries
from tl.config import FIELD_HELP, RunConfig


def add_parsers(sub) -> None:
    """The ``train`` command and the hidden ``worker``."""
    train = sub.add_parser("train", help="train one run and print its progress")
    train.add_argument("--config", help="A JSON file of config fields to start from; the flags given override its "
                                        "values.")
    _add_config_flags(train)
    train.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    train.add_argument("--json", action="store_true", help=JSON_PROGRESS_HELP)
    train.set_defaults(handler=cmd_train)

    # No help=: argparse then leaves it out of the command list (the metavar set in
    # tl/cli/__init__.py drops it from the usage line). It trains a run already created with
    # status queued.
    worker = sub.add_parser("worker")
    worker.add_argument("run_id")
    worker.add_argument("--runs-dir")
    worker.add_argument("--json", action="store_true")
    worker.set_defaults(handler=cmd_worker)


def _add_config_flags(parser, names=None, defaults=None):
    """One ``--flag`` per RunConfig field (or per field in ``names``), typed from the
    dataclass, with its explanation, its choices and its default (or each strategy's, for
    the fields whose default depends on the strategy); ``defaults`` replaces the default
    part of a field's help."""
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        if names is not None and field.name not in names:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        text = field_help(field, (defaults or {}).get(field.name))
        if field.name == "tags":
            parser.add_argument("--tag", dest="tags", action="append", metavar="TAG",
                                help=text.replace(" Default:", " Repeat the flag for several. Default:", 1))
        elif kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            parser.add_argument(flag, dest=field.name, type=base, default=None, help=text)


def field_help(field, default=None) -> str:
    """``--help`` text of one config field: what it does (``FIELD_HELP``), its choices
    where they are a fixed set, and its default (``default`` replaces the default part)."""
    from tl.config import CLASS_WEIGHTS, STRATEGY_DEFAULTS
    from tl.strategies import STRATEGIES

    parts = [FIELD_HELP[field.name]]
    plural = {"dataset": "datasets", "backbone": "backbones", "head": "heads", "strategy": "strategies",
              "optimizer": "optimizers"}.get(field.name)
    if plural:
        parts.append(f"One of: {', '.join(registries()[plural])} (`python -m tl list` explains them).")
    elif field.name == "class_weight":
        parts.append(f"One of: {', '.join(CLASS_WEIGHTS)}.")
    elif field.name in ("engine", "engine_precision"):
        variable = "TL_ENGINE" if field.name == "engine" else "TL_ENGINE_PRECISION"
        parts.append(f"Default: ${variable}, else auto.")
        return " ".join(parts).replace("%", "%%")
    if default is not None:
        parts.append(f"Default: {default}.")
    elif field.name in STRATEGY_DEFAULTS:
        per = ", ".join(f"{name} {spec.defaults[field.name]:g}" for name, spec in STRATEGIES.items())
        parts.append(f"Default per strategy: {per}.")
    elif field.name == "fine_tune_learning_rate":
        parts.append("Default: a tenth of the learning rate.")
    elif field.name == "tags":
        parts.append("Default: no tags.")
    elif field.default is None or field.default == "":
        parts.append("Default: none.")
    else:
        parts.append(f"Default: {str(field.default).lower() if isinstance(field.default, bool) else field.default}.")
    # argparse formats help with %-style substitution
    return " ".join(parts).replace("%", "%%")


def config_from_args(args) -> RunConfig:
    base = RunConfig.from_file(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(RunConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            base[field.name] = value
    return RunConfig.from_dict(base)


def cmd_train(args) -> int:
    from tl import cluster, training

    cfg = config_from_args(args)
    role = cluster.role()  # TF_CONFIG: one worker of a cluster (README, "Training across machines")
    if role:
        cluster.check_config(cfg)
    fetch_with_progress(cfg.dataset)
    if role and not role.chief:  # trains in step with the chief, writing only into a folder of its own
        with cluster.worker_folders() as folder:
            return _execute(training.prepare(cfg, folder), args, runs_dir=folder, role=role)
    run = training.prepare(cfg, args.runs_dir)
    return _execute(run, args, role=role)


WORKER_NICE = 10


def _lower_priority() -> None:
    """Run the app's background work below the server's CPU priority, so a class clicking
    through the pages is not slowed by the training it started (measured: bench/load.py)."""
    try:
        os.nice(WORKER_NICE)
    except (OSError, AttributeError):
        pass  # not allowed, or not a POSIX system: train at normal priority


def cmd_worker(args) -> int:
    from tl import runs

    os.environ.pop("TF_CONFIG", None)  # the app's runs never join a cluster (tl/jobs.py leaves it out too)
    _lower_priority()  # the pages people click come first (tl/jobs.py)
    run = runs.get(args.run_id, args.runs_dir)
    return _execute(run, args)


def _execute(run, args, runs_dir=None, role=None) -> int:
    """Train ``run`` printing its progress; ``runs_dir``: where it lives when not
    ``--runs-dir`` (a worker's own folder); ``role``: this process's place in a cluster."""
    from tl import training

    out = sys.stderr if args.json else sys.stdout
    runs_dir = runs_dir or args.runs_dir
    if role and not role.chief:
        print(f"Task {role.task} of a {role.workers}-worker cluster: it trains the chief's run and writes only "
              f"into {run.path}, removed at the end", file=out)
    else:
        print(f"Run {run.id} in {run.path}", file=out)
    if role:  # TensorFlow holds every signal but SIGKILL until the cluster forms
        print(f"Waiting for all {role.workers} workers in TF_CONFIG to join; until they have, TensorFlow defers "
              f"Ctrl-C (kill -9 {os.getpid()} stops it)", file=out, flush=True)
    previous = _cancel_on_signals(run)
    try:
        status = training.execute(run, runs_dir, on_event=_printer(out))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    metrics = run.metrics
    for report in metrics.get("convergence") or []:
        verdict = {True: "converged", False: "NOT converged", None: "convergence unknown"}[report.get("converged")]
        print(f"Convergence ({report['phase']}): {verdict}, {report['summary']}", file=out)
    summary = {
        "run_id": run.id, "run_dir": str(run.path), "status": status["status"],
        "reason": status.get("reason"), "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"), "train_seconds": metrics.get("train_seconds"),
        "trainable_params": metrics.get("trainable_params"), "convergence": metrics.get("convergence"),
    }
    if role:
        summary.update(role.as_record())
        if not role.chief:  # its own folder goes at the end: it names the run it trained, the chief's
            chief = next((e for e in run.events()[0] if e["type"] == "cluster"), {})
            summary.update(run_id=chief.get("chief_run_id"), run_dir=None)
    if args.json:
        print(json.dumps(summary))
    return 0 if status["status"] == "done" else EXIT_FAILED


def _cancel_on_signals(run) -> dict:
    """SIGTERM/SIGINT ask the run to stop at the next batch (status cancelled, history
    kept); a second signal stops at once. Returns the handlers it replaced."""
    def handler(signum, frame):
        run.request_cancel()
        signal.signal(signum, signal.SIG_DFL)

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _printer(out):
    tty = out.isatty()

    def show(event):
        line = format_event(event)
        if event["type"] == "batch":
            if tty:
                print("\r" + line, end="", file=out, flush=True)
            return
        if line:
            print(("\r" if tty else "") + line, file=out, flush=True)

    return show


def format_event(event) -> str:
    """One human line for a progress event ('' for events not worth a line)."""
    kind = event["type"]
    if kind == "device":
        gpus = f" ({', '.join(event['gpus'])})" if event.get("gpus") else ""
        return f"Device: {event['kind']}{gpus}, {event['replicas']} replica(s), training in {event.get('train_precision') or event.get('precision')}"
    if kind == "cluster":
        writer = "this process writes it" if event["role"] == "chief" else "the chief writes it"
        return (f"Cluster: {event['role']} ({event['task']}) of {event['workers']} workers, training run "
                f"{event['chief_run_id']} ({writer})")
    if kind == "data":
        return (f"Data: {event['classes']} classes, {event['images']} images "
                f"(train {event['train']} / val {event['val']} / test {event['test']})")
    if kind == "phase":
        if event.get("method") == "exact":
            return (f"Phase '{event['phase']}': fitting the head exactly (L-BFGS, a logistic regression on "
                    f"standardised features), {event['trainable_params']:,} trainable parameters")
        return (f"Phase '{event['phase']}': {event['epochs']} epoch(s) at learning rate "
                f"{event['learning_rate']:g}, {event['trainable_params']:,} trainable parameters")
    if kind == "features":
        if event["cache"] == "hit":
            return f"Features: reused from the cache ({event['images']} images)"
        if event["cache"] == "stored":
            engine = f" ({event['engine']}, {event['engine_precision']})" if event.get("engine") else ""
            reused = f", {event['reused']} reused from the cache" if event.get("reused") else ""
            return f"Features: extracted {event['images']} images in {event['seconds']:.1f} s{engine}{reused}"
        return f"Features: {event.get('done', 0)}/{event['images']} images"
    if kind == "batch":
        return (f"  epoch {event['epoch']} step {event['step']}/{event['steps']} "
                f"loss {_fmt(event['loss'])} acc {_fmt(event['accuracy'])}")
    if kind == "epoch":
        if event.get("method") == "exact":  # reported iterations only: a few lines (tl/head_fit.py)
            return (f"Iteration {event.get('iteration', event['epoch'])} ({event['phase']}, exact fit): "
                    f"loss {_fmt(event['loss'])} acc {_fmt(event['accuracy'])} | val loss {_fmt(event['val_loss'])} "
                    f"val acc {_fmt(event['val_accuracy'])}")
        return (f"Epoch {event['epoch']} ({event['phase']}): loss {_fmt(event['loss'])} "
                f"acc {_fmt(event['accuracy'])} | val loss {_fmt(event['val_loss'])} "
                f"val acc {_fmt(event['val_accuracy'])} ({event['seconds']:.1f} s)")
    if kind == "status":
        if event["status"] == "done":
            return f"Done: test accuracy {event['test_accuracy']:.4f}"
        if event["status"] in ("failed", "cancelled"):
            return f"{event['status'].capitalize()}: {event.get('reason') or 'stopped by the user'}"
        return ""
    if kind == "log":
        return event["message"]
    return ""


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"
