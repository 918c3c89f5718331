"""``python -m tl check``: check a dataset (the photos probably in the wrong class,
near-duplicates, outliers, label quality per class) from its cached features: one call into
:func:`tl.check.run_check`, printed as a table or as one JSON line; ``--out`` writes the
whole result for the app, which runs this command in the background."""

import json
import signal
import sys
from pathlib import Path

EXIT_STOPPED = 1
TABLE_ROWS = 20  # suspects shown in the table unless --top says otherwise


def add_parser(sub, runs_dir_help: str) -> None:
    """The ``check`` command."""
    from tl.check import CUTS
    from tl.config import FIELD_HELP, RunConfig
    from tl.engine import ENGINES, PRECISIONS

    text = ("check a dataset: the photos probably in the wrong class, near-duplicates, outliers and the label "
            "quality of each class, from out-of-fold predictions on the cached features")
    check = sub.add_parser("check", help=text, description=text[0].upper() + text[1:] + ".")

    def field(name, kind=str, default=None, text=None):
        shown = getattr(RunConfig, name, None) if default is None else default
        check.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=default,
                           help=f"{text or FIELD_HELP[name]} Default: {'none' if shown is None else shown}."
                           .replace("%", "%%"))

    check.add_argument("--dataset", required=True, help=FIELD_HELP["dataset"] + " For your folder: folder.")
    field("data_dir")
    field("backbone")
    field("weights")
    check.add_argument("--cut", choices=CUTS, default="last",
                       help="Where the backbone is cut for the features: last (its last layer) or earlier (the "
                            "earlier cut the earlier_layer strategy uses; often better for images unlike everyday "
                            "photos). Default: last.")
    field("image_size", int)
    field("batch_size", int, text="Images per batch of the feature pass.")
    field("samples_per_class", int, 0)
    field("seed", int, text="Seeds the train/val/test split (give the run's, so that a leak is across its split) "
                            "and the folds.")
    field("val_fraction", float)
    field("test_fraction", float)
    check.add_argument("--engine", choices=ENGINES, help=FIELD_HELP["engine"] + " Default: $TL_ENGINE, else auto.")
    check.add_argument("--engine-precision", choices=PRECISIONS,
                       help=FIELD_HELP["engine_precision"] + " Default: $TL_ENGINE_PRECISION, else auto.")
    check.add_argument("--runs-dir", help=runs_dir_help + " Cached features live under it.")
    check.add_argument("--json", action="store_true",
                       help="Print progress to stderr and one JSON object as the last line of stdout.")
    check.add_argument("--out", help="Also write the whole result (every image, its split, map position and "
                                     "flags) as JSON to this file, atomically.")
    check.add_argument("--events", help="Also append each progress event as a JSON line to this file.")
    check.add_argument("--top", type=int, help=f"Suspects to list (the JSON line and the table). Default: all in "
                                               f"the JSON, {TABLE_ROWS} in the table.")
    check.set_defaults(handler=cmd_check)


def cmd_check(args) -> int:
    from tl import check
    from tl.errors import Cancelled, UserError
    from tl.files import append_jsonl, atomic_write_json, os_error_sentence

    fields = {name: getattr(args, name) for name in (
        "dataset", "data_dir", "backbone", "weights", "image_size", "batch_size", "samples_per_class", "seed",
        "val_fraction", "test_fraction", "engine", "engine_precision") if getattr(args, name) is not None}
    cfg = check.check_config(args.cut, **fields)
    for path in (args.out, args.events):
        if path and not Path(path).expanduser().parent.is_dir():
            raise UserError(f"The folder of '{path}' does not exist; create it or give another file.")
    out = sys.stderr if args.json else sys.stdout

    def on_event(event):
        if args.events:
            append_jsonl(Path(args.events).expanduser(), event)
        line = check.describe_event(event)
        if line:
            print(line, file=out, flush=True)

    stop = []
    previous = {signum: signal.signal(signum, _stopper(stop)) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = check.run_check(cfg, args.runs_dir, on_event=on_event, should_stop=lambda: bool(stop))
    except Cancelled:
        print("Stopped: the check was cancelled; nothing was written.", file=out)
        if args.json:
            print(json.dumps({"status": "cancelled"}))
        return EXIT_STOPPED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.out:
        try:
            atomic_write_json(Path(args.out).expanduser(), result.to_dict())
        except OSError as exc:
            raise UserError(os_error_sentence(exc, args.out)) from None
    if args.json:
        print(json.dumps(result.summary(args.top)))
    else:
        print_table(result, TABLE_ROWS if args.top is None else args.top)
    return 0


def _stopper(stop: list):
    """The first SIGTERM or SIGINT stops the check at its next step; a second, at once."""
    def handler(signum, frame):
        stop.append(signum)
        signal.signal(signum, signal.SIG_DFL)

    return handler


def print_table(result, top: int) -> None:
    """The check as readable text: a summary line, then each finding."""
    s = result.settings
    print(f"\nChecked {len(result.images)} images in {len(result.class_names)} classes of {result.dataset} with "
          f"{s['backbone']} ({s['cut']} layer{', ' + s['layer'] if s['layer'] else ''}, {s['image_size']} px): "
          f"out-of-fold accuracy {result.accuracy:.3f}, {result.timings['total']:.1f} s.")
    if result.note:
        print(result.note)
    print(f"\nProbably in the wrong class: {len(result.suspects)}"
          + (f" (the {top} most suspicious first)" if len(result.suspects) > top else "")
          + (":" if result.suspects else "."))
    if result.suspects and top:
        width = max(len(s["file"]) for s in result.suspects[:top])
        print(f"  {'rank':>5}  {'score':>5}  {'file':{width}}  given -> likely")
        for item in result.suspects[:top]:
            print(f"  {item['rank']:5d}  {item['score']:.3f}  {item['file']:{width}}  {item['label']} -> {item['likely']}")
    print(f"\nNear-duplicates: {len(result.duplicates)}" + (":" if result.duplicates else "."))
    for pair in result.duplicates[:top or None]:
        kind = "leaks across splits" if pair["leakage"] else "same class" if pair["same_class"] else "two classes"
        print(f"  {pair['similarity']:.3f}  {pair['files'][0]}  {pair['files'][1]}  ({kind})")
    print(f"\nOutliers (far from every class): {len(result.outliers)}" + (":" if result.outliers else "."))
    for item in result.outliers[:top or None]:
        print(f"  {item['distance']:.3f}  {item['file']}  ({item['label']})")
    print("\nLabel quality (share of each class's images that look right):")
    for name, quality in sorted(result.label_quality.items(), key=lambda kv: kv[1]):
        print(f"  {quality:6.1%}  {name}")
