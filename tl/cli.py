"""``python -m tl``: train, list runs and registries, run a queued run (for the app).

The same functions the app calls: :func:`tl.training.prepare` and
:func:`tl.training.execute`. Errors a user can cause print one sentence and exit 2. (One
module for every subcommand, so ``--help`` and the handlers are read side by side.)
"""

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import typing

from tl import cli_check, cli_data
from tl.config import FIELD_HELP, RunConfig
from tl.engine import ENGINE_DESCRIPTIONS, ENGINES, PRECISION_DESCRIPTIONS, PRECISIONS
from tl.errors import UserError

EXIT_FAILED = 1
EXIT_USAGE = 2
RUNS_DIR_HELP = "Folder that holds the runs. Default: $TL_RUNS_DIR, else ./runs."
JSON_PROGRESS_HELP = "Print progress to stderr and a JSON summary as the last line of stdout."
VERBOSE_HELP = ("Also show what other libraries print to stderr (TensorFlow's start-up lines, Python warnings); "
                "without it stderr holds only this program's own lines.")


def main(argv=None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    public = _public_commands(parser)
    command = next((arg for arg in argv if not arg.startswith("-")), None)  # --verbose may come first
    if command is not None and command not in public + list(HIDDEN):
        # argparse's own message would list the hidden commands among the choices
        parser.error(f"unknown command {command!r}; choose from {', '.join(public)}")
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    # A worker's stderr is its run's worker.log, read when a run dies: it keeps every line.
    quiet = not args.verbose and args.command not in HIDDEN
    try:
        with own_lines_on_stderr(quiet):
            return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if getattr(args, "json", False):  # whoever parses stdout gets the reason too
            print(json.dumps({"error": str(exc)}))
        return EXIT_USAGE
    except BrokenPipeError:  # `python -m tl runs | head`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# -- parser ----------------------------------------------------------------------------

HIDDEN = ("worker",)  # internal: the app's job manager runs it; not for people


def _public_commands(parser) -> list:
    """The subcommands a person may type, in the order they were added."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [name for name in subparsers.choices if name not in HIDDEN]


def _parser():
    parser = argparse.ArgumentParser(prog="python -m tl", description="Transfer Learning Studio")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train one run and print its progress")
    train.add_argument("--config", help="A JSON file of config fields to start from; the flags given override its "
                                        "values.")
    _add_config_flags(train)
    train.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    train.add_argument("--json", action="store_true", help=JSON_PROGRESS_HELP)
    train.set_defaults(handler=cmd_train)

    # No help=: argparse then leaves it out of the command list (the metavar below drops
    # it from the usage line). It trains a run already created with status queued.
    worker = sub.add_parser("worker")
    worker.add_argument("run_id")
    worker.add_argument("--runs-dir")
    worker.add_argument("--json", action="store_true")
    worker.set_defaults(handler=cmd_worker)

    runs_cmd = sub.add_parser("runs", help="list runs")
    runs_cmd.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    runs_cmd.add_argument("--json", action="store_true", help="Print the runs as one JSON list.")
    runs_cmd.set_defaults(handler=cmd_runs)

    predict = sub.add_parser("predict", help="classify images with a finished run (ImageNet head and transferred head)")
    predict.add_argument("run_id")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--top", type=int, default=5, help="Classes to show per head, 1 to 10. Default: 5.")
    predict.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    predict.add_argument("--json", action="store_true", help="Print one JSON object per image.")
    predict.add_argument("--engine", choices=ENGINES, help="What runs the backbone: " + "; ".join(
        f"{name}: {text}" for name, text in ENGINE_DESCRIPTIONS.items()) + " Default: $TL_ENGINE, else auto.")
    predict.add_argument("--engine-precision", choices=PRECISIONS, help="Precision of the backbone pass: " + "; ".join(
        f"{name}: {text}" for name, text in PRECISION_DESCRIPTIONS.items()) + " Default: $TL_ENGINE_PRECISION, else auto.")
    predict.set_defaults(handler=cmd_predict)

    list_cmd = sub.add_parser("list", help="list datasets, backbones, heads, strategies and optimizers")
    list_cmd.add_argument("--json", action="store_true", help="Print the names only, as one JSON object.")
    list_cmd.set_defaults(handler=cmd_list)
    _add_compare(sub)

    download = sub.add_parser("download", help="download a dataset into the Keras cache (progress per 10%%)")
    download.add_argument("dataset")
    download.set_defaults(handler=cmd_download)
    _add_export_parser(sub)
    cli_data.add_parser(sub, RUNS_DIR_HELP)
    cli_check.add_parser(sub, RUNS_DIR_HELP)
    sub.metavar = "{" + ",".join(name for name in sub.choices if name not in HIDDEN) + "}"
    _verbose_after_commands(sub)
    return parser


def _verbose_after_commands(sub) -> None:
    """``--verbose`` after any (sub)command too, as people type it; SUPPRESS leaves the
    value of one given before the command alone when it is not repeated."""
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_after_commands(action)


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


# -- stderr: this program's own lines -------------------------------------------------

class _OwnLines:
    """``sys.stderr`` that passes on what the project's code writes (errors, notes, progress)
    and drops what other libraries write there (Python warnings, their logging and prints)."""

    def __init__(self, target):
        self._target = target

    def write(self, text):
        return self._target.write(text) if _written_by_project() else len(text)

    def writelines(self, lines):
        if _written_by_project():
            self._target.writelines(lines)

    def __getattr__(self, name):  # flush, isatty, encoding...: the stream's own
        return getattr(self._target, name)


def _written_by_project() -> bool:
    """Whether the innermost caller outside the standard library (print, warnings and
    logging all write through it) is a module of ``tl``; with no such caller it is the
    interpreter's own line, such as an uncaught exception's traceback, and passes."""
    frame = sys._getframe(2)  # the caller of _OwnLines.write (or .writelines)
    while frame is not None:
        spec = frame.f_globals.get("__spec__")  # names `python -m tl`'s __main__ tl.__main__
        top = (getattr(spec, "name", None) or frame.f_globals.get("__name__") or "").partition(".")[0]
        if top not in sys.stdlib_module_names:
            return top == "tl"
        frame = frame.f_back
    return True


@contextlib.contextmanager
def own_lines_on_stderr(quiet: bool = True):
    """While it lasts (with ``quiet``), stderr carries the project's own lines only.

    Native libraries write straight to file descriptor 2 (TensorFlow's start-up lines, some
    of which no setting silences on a GPU machine), so that descriptor points at the null
    device while Python's ``sys.stderr`` writes to a copy of the real one, through
    :class:`_OwnLines`. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 as well, so TensorFlow does
    not format them at all. Everything is put back on exit, for in-process callers (tests).
    """
    if not quiet or sys.stderr is None:  # None: started with stderr closed
        yield
        return
    level_was_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    stream = sys.stderr
    stream.flush()
    try:
        on_fd2 = stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's capture, not a descriptor
        on_fd2 = False
    real = os.dup(2)
    target = (open(real, "w", buffering=1, encoding=stream.encoding, errors="backslashreplace", closefd=False)
              if on_fd2 else stream)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = _OwnLines(target)
    try:
        yield
    finally:
        sys.stderr = stream
        if target is stream:
            stream.flush()
        else:
            target.close()  # its descriptor, closefd=False, is closed below
        os.dup2(real, 2)
        os.close(real)
        if not level_was_set:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


# -- commands --------------------------------------------------------------------------

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
            return f"Features: extracted {event['images']} images in {event['seconds']:.1f} s{engine}"
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


def cmd_runs(args) -> int:
    from tl import runs

    rows = [run.summary() for run in runs.list_runs(args.runs_dir)]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"No runs in {runs.runs_root(args.runs_dir)}.")
        return 0
    header = f"{'run id':44} {'status':9} {'dataset':10} {'backbone':18} {'strategy':18} {'test acc':>8} {'time':>7}"
    print(header)
    for row in rows:
        acc = f"{row['test_accuracy']:.4f}" if isinstance(row["test_accuracy"], (int, float)) else "-"
        took = "-" if row["duration"] is None else f"{row['duration']:.0f}s"
        text = {key: str(row[key] or "-") for key in ("status", "dataset", "backbone", "strategy")}
        print(f"{row['run_id']:44} {text['status']:9} {text['dataset']:10} {text['backbone']:18} "
              f"{text['strategy']:18} {acc:>8} {took:>7}")
    for row in rows:
        if row["status"] == "damaged":
            print(row["reason"])
    return 0


def registries() -> dict:
    """Names and one-line descriptions of every registry (no TensorFlow needed)."""
    from tl.backbones import BACKBONES
    from tl.config import OPTIMIZER_DESCRIPTIONS
    from tl.datasets import DATASETS
    from tl.heads import HEADS
    from tl.strategies import STRATEGIES

    return {
        "datasets": {name: spec.description for name, spec in DATASETS.items()},
        "backbones": {name: spec.description for name, spec in BACKBONES.items()},
        "heads": {name: spec.description for name, spec in HEADS.items()},
        "strategies": {name: spec.description for name, spec in STRATEGIES.items()},
        "optimizers": dict(OPTIMIZER_DESCRIPTIONS),
    }


def cmd_list(args) -> int:
    found = registries()
    if args.json:
        print(json.dumps({kind: list(entries) for kind, entries in found.items()}))
        return 0
    for kind, entries in found.items():
        print(f"{kind}:")
        for name, description in entries.items():
            print(f"  {name:20} {description}")
    return 0


def cmd_predict(args) -> int:
    """Both heads' top-k for each image; a bad file gets its own line and the rest go on."""
    from pathlib import Path

    from tl import runs
    from tl.images import ImageError, decode_image
    from tl.predict import DRAFT_SIZE, Predictor, check_top_k

    k = check_top_k(args.top)
    predictor = Predictor(runs.get(args.run_id, args.runs_dir), engine=args.engine, precision=args.engine_precision)
    if predictor.engine_note:
        print(f"note: {predictor.engine_note}", file=sys.stderr)
    failed = 0
    for path in args.images:
        name = Path(path).name
        try:
            image = decode_image(path, name=name, draft_size=DRAFT_SIZE)
        except ImageError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": path, "error": str(exc)}), flush=True)
            continue
        result = predictor.predict(image, k)
        if args.json:
            print(json.dumps(result.as_json(path)), flush=True)
            continue
        print(path)
        if result.imagenet is None:
            print(f"  ImageNet head: none. {result.imagenet_reason}")
        else:
            print(f"  ImageNet head ({predictor.cfg.backbone}):")
            for label, score in zip(result.imagenet.labels, result.imagenet.scores):
                print(f"    {score:7.2%}  {label}")
        print(f"  Transferred head (run {predictor.run.id}):")
        for label, score in zip(result.transfer.labels, result.transfer.scores):
            print(f"    {score:7.2%}  {label}")
    return EXIT_USAGE if failed else 0


# -- compare: one run per strategy on the same split -----------------------------------

_COMPARE_FLAGS = ("dataset", "data_dir", "backbone", "head", "weights", "epochs", "fine_tune_epochs",
                  "samples_per_class", "image_size", "batch_size", "learning_rate", "synthetic_classes", "seed")


def _add_compare(sub):
    from tl.strategies import STRATEGIES

    compare = sub.add_parser("compare", help="train one run per strategy on the same split and compare them")
    _add_config_flags(compare, _COMPARE_FLAGS,
                      {"weights": "imagenet, or none for backbones without ImageNet weights"})
    compare.add_argument("--strategies", default="all",
                         help=f"Which strategies to train, one run each: 'all' or a comma-separated list of "
                              f"{', '.join(STRATEGIES)}. Default: all.")
    compare.add_argument("--similar", choices=("yes", "no"),
                         help="Your answer to 'do the images look like everyday photos?', used when the "
                              "advisor cannot measure it. Default: yes.")
    compare.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    compare.add_argument("--json", action="store_true", help=JSON_PROGRESS_HELP)
    compare.set_defaults(handler=cmd_compare)


def compare_config(args) -> RunConfig:
    """The sweep's shared config from ``compare``'s flags."""
    from tl.backbones import BACKBONES

    values = {name: getattr(args, name) for name in _COMPARE_FLAGS if getattr(args, name) is not None}
    backbone = BACKBONES.get(values.get("backbone", RunConfig.backbone))
    if "weights" not in values and backbone is not None:
        values["weights"] = "imagenet" if backbone.pretrained else "none"
    return RunConfig(**values)


def cmd_compare(args) -> int:
    from tl import advisor, datasets
    from tl import sweep as sweeps

    out = sys.stderr if args.json else sys.stdout
    if os.environ.get("TF_CONFIG"):
        raise UserError("compare trains on this machine only: unset TF_CONFIG (across machines, train one run at "
                        "a time with `python -m tl train`).")
    base = compare_config(args)
    strategies = sweeps.parse_strategies(args.strategies, base.backbone)
    sweeps.sweep_configs(base, strategies, "check")  # every config valid before any work
    data = datasets.load(base, args.runs_dir)
    print(f"Measuring similarity to ImageNet with {base.backbone}...", file=out, flush=True)
    advice = advisor.advise(advisor.images_per_class(data), advisor.measure_similarity(data, base.backbone, seed=base.seed,
                                                                                      runs_dir=args.runs_dir),
                            assume_similar=args.similar != "no", backbone=base.backbone, weights=base.weights)
    print(f"Advisor: {advice.case} -> {advice.strategy}. {advice.basis}", file=out)
    sweep = sweeps.create(base, strategies, args.runs_dir, advice=advice.to_dict())
    print(f"Sweep {sweep.id}: {', '.join(strategies)}", file=out, flush=True)

    def on_run(run):
        print(f"\n== {run.config.strategy} (run {run.id})", file=out, flush=True)

    def stop(signum, frame):
        sweeps.stop(sweep)
        signal.signal(signum, signal.SIG_DFL)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        sweeps.run_in_process(sweep, args.runs_dir, on_event=_printer(out), on_run=on_run, data=data)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    table = sweeps.rows(sweep.runs())
    verdict = sweeps.verdict(advice.strategy, table)
    if args.json:
        keep = ("strategy", "run_id", "status", "test_accuracy", "train_seconds", "trainable_params")
        print(json.dumps({"sweep_id": sweep.id, "advice": advice.to_dict(), "verdict": verdict,
                          "rows": [{key: row[key] for key in keep} for row in table]}))
    else:
        print()
        _print_compare_table(table)
        if verdict:
            print(verdict["message"])
    return 0 if all(row["status"] == "done" for row in table) else EXIT_FAILED


def _print_compare_table(table) -> None:
    print(f"{'strategy':18} {'status':9} {'test acc':>8} {'best val':>8} {'train s':>8} {'trainable':>11} "
          f"{'total':>11} {'img/s':>8} {'epochs':>6}  run id")
    for row in table:
        def num(key, fmt, row=row):
            return "-" if row[key] is None else format(row[key], fmt)

        print(f"{row['strategy']:18} {row['status']:9} {num('test_accuracy', '.4f'):>8} "
              f"{num('best_val_accuracy', '.4f'):>8} {num('train_seconds', '.1f'):>8} "
              f"{num('trainable_params', ','):>11} {num('total_params', ','):>11} "
              f"{num('images_per_second', '.0f'):>8} {num('epochs_run', 'd'):>6}  {row['run_id']}")


def fetch_with_progress(dataset: str) -> None:
    """Download a dataset archive (if it is one and not cached), a progress line per 10%."""
    from tl import datasets

    spec = datasets.spec_of(dataset)
    if spec.download and not datasets.is_cached(datasets.DOWNLOADS[spec.download]):
        download = datasets.DOWNLOADS[spec.download]
        folder = datasets.fetch(download, progress=datasets.download_progress_printer(sys.stderr, download.title))
        print(f"{download.title} is in {folder}", file=sys.stderr)


def cmd_download(args) -> int:
    from tl import datasets
    from tl.errors import ConfigError

    spec = datasets.DATASETS.get(args.dataset)
    if spec is None or not spec.download:
        names = [name for name, s in datasets.DATASETS.items() if s.download]
        raise ConfigError(f"Expected a downloadable dataset, one of {names}. Received: {args.dataset!r}.")
    fetch_with_progress(args.dataset)
    print(datasets.fetch(datasets.DOWNLOADS[spec.download]))
    return 0


# -- export ----------------------------------------------------------------------------

def _add_export_parser(sub):
    export = sub.add_parser("export", help="export a finished run (keras, savedmodel zip, tflite, labels, card)")
    export.add_argument("run_id")
    from tl.export import FORMATS

    export.add_argument("--format", required=True, choices=FORMATS,
                        help="keras: the .keras model; savedmodel: a zipped TF SavedModel; tflite: TFLite "
                             "(a uint8 RGB image of any size in, resized inside); labels: labels.txt; card: a model card")
    export.add_argument("--quantize", action="store_true", help="tflite only: dynamic-range 8-bit weights")
    export.add_argument("--out", required=True, help="file to write, or an existing folder")
    export.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    export.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    """Write one export of a finished run and print the path written."""
    from tl import export, runs

    run = runs.get(args.run_id, args.runs_dir)
    path = export.export(run, args.format, args.out, quantize=args.quantize)
    print(f"Wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
