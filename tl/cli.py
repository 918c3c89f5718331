"""``python -m tl``: train, list runs and registries, run a queued run (for the app).

The same functions the app calls: :func:`tl.training.prepare` and
:func:`tl.training.execute`. Errors a user can cause print one sentence and exit 2.
"""

import argparse
import dataclasses
import json
import signal
import sys
import typing

from tl.config import RunConfig
from tl.errors import UserError

EXIT_FAILED = 1
EXIT_USAGE = 2


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- parser ----------------------------------------------------------------------------

def _parser():
    parser = argparse.ArgumentParser(prog="python -m tl", description="Transfer Learning Studio")
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help="train one run and print its progress")
    train.add_argument("--config", help="JSON config file; flags override its values")
    _add_config_flags(train)
    train.add_argument("--runs-dir", help="runs folder (default: $TL_RUNS_DIR or ./runs)")
    train.add_argument("--json", action="store_true", help="progress to stderr, a JSON summary as the last stdout line")
    train.set_defaults(handler=cmd_train)

    worker = sub.add_parser("worker", help="train a run already created with status queued (used by the app)")
    worker.add_argument("run_id")
    worker.add_argument("--runs-dir")
    worker.add_argument("--json", action="store_true")
    worker.set_defaults(handler=cmd_worker)

    runs_cmd = sub.add_parser("runs", help="list runs")
    runs_cmd.add_argument("--runs-dir")
    runs_cmd.add_argument("--json", action="store_true")
    runs_cmd.set_defaults(handler=cmd_runs)

    list_cmd = sub.add_parser("list", help="list datasets, backbones, heads, strategies and optimizers")
    list_cmd.add_argument("--json", action="store_true")
    list_cmd.set_defaults(handler=cmd_list)
    _add_export_parser(sub)
    return parser


def _add_config_flags(parser):
    """One ``--flag`` per RunConfig field, typed from the dataclass."""
    hints = typing.get_type_hints(RunConfig)
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        if field.name == "tags":
            parser.add_argument("--tag", dest="tags", action="append", help="label the run (repeatable)")
        elif kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None)
        else:
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            parser.add_argument(flag, dest=field.name, type=base, default=None,
                                help=f"default: {field.default!r}" if field.default is not dataclasses.MISSING else None)


def config_from_args(args) -> RunConfig:
    base = RunConfig.from_file(args.config).to_dict() if args.config else {}
    for field in dataclasses.fields(RunConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            base[field.name] = value
    return RunConfig.from_dict(base)


# -- commands --------------------------------------------------------------------------

def cmd_train(args) -> int:
    from tl import training

    cfg = config_from_args(args)
    run = training.prepare(cfg, args.runs_dir)
    return _execute(run, args)


def cmd_worker(args) -> int:
    from tl import runs

    run = runs.get(args.run_id, args.runs_dir)
    return _execute(run, args)


def _execute(run, args) -> int:
    from tl import training

    out = sys.stderr if args.json else sys.stdout
    print(f"Run {run.id} in {run.path}", file=out)
    previous = _cancel_on_signals(run)
    try:
        status = training.execute(run, args.runs_dir, on_event=_printer(out))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    metrics = run.metrics
    summary = {
        "run_id": run.id, "run_dir": str(run.path), "status": status["status"],
        "reason": status.get("reason"), "test_accuracy": metrics.get("test_accuracy"),
        "test_loss": metrics.get("test_loss"), "train_seconds": metrics.get("train_seconds"),
        "trainable_params": metrics.get("trainable_params"),
    }
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
        return f"Device: {event['kind']}{gpus}, {event['replicas']} replica(s), {event['precision']}"
    if kind == "data":
        return (f"Data: {event['classes']} classes, {event['images']} images "
                f"(train {event['train']} / val {event['val']} / test {event['test']})")
    if kind == "phase":
        return (f"Phase '{event['phase']}': {event['epochs']} epoch(s) at learning rate "
                f"{event['learning_rate']:g}, {event['trainable_params']:,} trainable parameters")
    if kind == "features":
        if event["cache"] == "hit":
            return f"Features: reused from the cache ({event['images']} images)"
        if event["cache"] == "stored":
            return f"Features: extracted {event['images']} images in {event['seconds']:.1f} s"
        return f"Features: {event.get('done', 0)}/{event['images']} images"
    if kind == "batch":
        return (f"  epoch {event['epoch']} step {event['step']}/{event['steps']} "
                f"loss {_fmt(event['loss'])} acc {_fmt(event['accuracy'])}")
    if kind == "epoch":
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
    header = f"{'run id':44} {'status':9} {'dataset':10} {'backbone':15} {'strategy':18} {'test acc':>8} {'time':>7}"
    print(header)
    for row in rows:
        acc = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        took = "-" if row["duration"] is None else f"{row['duration']:.0f}s"
        print(f"{row['run_id']:44} {row['status']:9} {row['dataset']:10} {row['backbone']:15} "
              f"{row['strategy']:18} {acc:>8} {took:>7}")
    return 0


def registries() -> dict:
    """Names and one-line descriptions of every registry (no TensorFlow needed)."""
    from tl.backbones import BACKBONES
    from tl.config import OPTIMIZERS
    from tl.datasets import DATASETS
    from tl.heads import HEADS
    from tl.strategies import STRATEGIES

    return {
        "datasets": {name: spec.description for name, spec in DATASETS.items()},
        "backbones": {name: spec.description for name, spec in BACKBONES.items()},
        "heads": {name: spec.description for name, spec in HEADS.items()},
        "strategies": {name: spec.description for name, spec in STRATEGIES.items()},
        "optimizers": {name: "" for name in OPTIMIZERS},
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


# -- export ----------------------------------------------------------------------------

def _add_export_parser(sub):
    export = sub.add_parser("export", help="export a finished run (keras, savedmodel zip, tflite, labels, card)")
    export.add_argument("run_id")
    export.add_argument("--format", required=True, choices=("keras", "savedmodel", "tflite", "labels", "card"),
                        help="keras: the .keras model; savedmodel: a zipped TF SavedModel; tflite: TFLite "
                             "(uint8 RGB image of the run's image size in); labels: labels.txt; card: a model card")
    export.add_argument("--quantize", action="store_true", help="tflite only: dynamic-range 8-bit weights")
    export.add_argument("--out", required=True, help="file to write, or an existing folder")
    export.add_argument("--runs-dir")
    export.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    """Write one export of a finished run and print the path written."""
    from tl import export, runs

    run = runs.get(args.run_id, args.runs_dir)
    path = export.export(run, args.format, args.out, quantize=args.quantize)
    print(f"Wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
