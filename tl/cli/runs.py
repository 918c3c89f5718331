"""The commands about runs and what they are made from: ``runs`` (list the runs), ``list``
(the registries: datasets, backbones, heads, strategies, optimizers; :func:`registries`),
``predict`` (classify images with a finished run: files one by one, or a folder or zip
batched through :mod:`tl.batch` into a CSV and a zip sorted by class), ``export`` (write a finished run in one
format) and ``download`` (fetch a dataset archive, a progress line per 10%;
:func:`fetch_with_progress`, which ``train`` calls too)."""

import json
import sys

from tl.batch import UNKNOWN_FOLDER
from tl.cli.common import EXIT_USAGE, RUNS_DIR_HELP
from tl.engine import ENGINE_DESCRIPTIONS, ENGINES, PRECISION_DESCRIPTIONS, PRECISIONS
from tl.errors import UserError
from tl.novelty import STRICTNESS
from tl.paths import runs_root


def add_runs_parser(sub) -> None:
    """The ``runs`` command."""
    runs_cmd = sub.add_parser("runs", help="list runs")
    runs_cmd.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    runs_cmd.add_argument("--json", action="store_true", help="Print the runs as one JSON list.")
    runs_cmd.set_defaults(handler=cmd_runs)


def add_predict_parser(sub) -> None:
    """The ``predict`` command."""
    predict = sub.add_parser("predict", help="classify images with a finished run (ImageNet head and transferred head)")
    predict.add_argument("run_id")
    predict.add_argument("images", nargs="*", metavar="IMAGE")
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--folder", metavar="DIR", help=(
        "Classify every image under DIR (sub-folders too), batched, instead of IMAGE files: a CSV "
        "(see --csv) and a progress line per 10%% on stderr. A photo that cannot be read is a row "
        "with its reason in `error` and the others are still classified; the exit status is 0 "
        "when the outputs are written, 2 when nothing is (a missing folder, no images, none readable)."))
    source.add_argument("--zip", metavar="FILE", help=(
        "As --folder, for the images in a zip (any layout), checked as uploads are (odd paths, links, "
        "zip bombs refused) and unpacked into a temporary folder that is removed afterwards."))
    predict.add_argument("--csv", metavar="OUT", help=(
        "Write the CSV (file, class, confidence, unknown, novelty, class_1, prob_1, ..., error) to OUT. "
        "Without it the CSV goes to stdout (unless --json). Written when every photo is done, "
        "all at once: never half a file."))
    predict.add_argument("--sorted-zip", metavar="OUT", help=(
        f"Also write a zip of the photos sorted into one folder per class, those that look like none "
        f"of the classes in {UNKNOWN_FOLDER}/ (unreadable ones left out)."))
    predict.add_argument("--top", type=int, default=5, help="Classes to show per head, 1 to 10. Default: 5.")
    predict.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    predict.add_argument("--json", action="store_true", help=(
        "Print one JSON object per image: both heads' top-k, and for the transferred head the calibrated "
        "`confidence`, `unknown` (the photo looks like none of the run's classes; null when the run cannot tell), "
        "its `novelty` score with the cut (`threshold`) and the `confidence_floor`."))
    predict.add_argument("--strictness", choices=list(STRICTNESS), default="balanced", help=(
        "How readily a photo counts as none of the run's classes: " + ", ".join(
            f"{name} lets {share:.0%} of held-out photos of the classes through" for name, share in STRICTNESS.items())
        + ". Default: balanced.").replace("%", "%%"))
    predict.add_argument("--engine", choices=ENGINES, help=_choices_help(
        "What runs the backbone", ENGINE_DESCRIPTIONS, "$TL_ENGINE"))
    predict.add_argument("--engine-precision", choices=PRECISIONS, help=_choices_help(
        "Precision of the backbone pass", PRECISION_DESCRIPTIONS, "$TL_ENGINE_PRECISION"))
    predict.set_defaults(handler=cmd_predict)


def _choices_help(what: str, descriptions: dict, env: str) -> str:
    """``what: a: text; b: text. Default: ENV, else auto.`` with argparse's ``%`` escaped."""
    text = "; ".join(f"{name}: {line.rstrip('.')}" for name, line in descriptions.items())
    return f"{what}: {text}. Default: {env}, else auto.".replace("%", "%%")


def add_list_parser(sub) -> None:
    """The ``list`` command."""
    list_cmd = sub.add_parser("list", help="list datasets, backbones, heads, strategies and optimizers")
    list_cmd.add_argument("--json", action="store_true", help="Print the names only, as one JSON object.")
    list_cmd.set_defaults(handler=cmd_list)


def add_download_parser(sub) -> None:
    """The ``download`` command."""
    download = sub.add_parser("download", help="download a dataset into the Keras cache (progress per 10%%)")
    download.add_argument("dataset")
    download.set_defaults(handler=cmd_download)


def add_export_parser(sub) -> None:
    """The ``export`` command."""
    export = sub.add_parser("export", help="export a finished run (keras, savedmodel zip, tflite, labels, card, "
                                           "web page zip)")
    export.add_argument("run_id")
    from tl.export import FORMATS

    export.add_argument("--format", required=True, choices=FORMATS,
                        help="keras: the .keras model; savedmodel: a zipped TF SavedModel; tflite: TFLite "
                             "(a uint8 RGB image of any size in, resized inside); labels: labels.txt; card: a model card; "
                             "web: a zip of a static web page that runs the model in a browser (LiteRT.js)")
    export.add_argument("--quantize", nargs="?", const="dynamic", default=None, metavar="{float16,dynamic,int8}",
                        help="tflite and web only: float16 weights; dynamic (the default when no variant is named): "
                             "8-bit weights; int8: full integer, calibrated on up to 100 training photos, uint8 in")
    export.add_argument("--out", required=True, help="file to write, or an existing folder")
    export.add_argument("--runs-dir", help=RUNS_DIR_HELP)
    export.set_defaults(handler=cmd_export)


def cmd_runs(args) -> int:
    from tl import runs

    rows = [run.summary() for run in runs.list_runs(args.runs_dir)]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"No runs in {runs_root(args.runs_dir)}.")
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

    from tl.images import ImageError, decode_image
    from tl.predict import DRAFT_SIZE, check_top_k

    k = check_top_k(args.top)
    if args.folder or args.zip or args.csv or args.sorted_zip:
        return _predict_batch(args, k)
    if not args.images:
        raise UserError("Give the images to classify: IMAGE files, --folder DIR or --zip FILE.")
    predictor = _predictor(args)
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
        result = predictor.predict(image, k, STRICTNESS[args.strictness])
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
        if result.unknown:
            print("    looks like none of these classes (its guesses below are what the model would answer anyway)")
        for label, score in zip(result.transfer.labels, result.transfer.scores):
            print(f"    {score:7.2%}  {label}")
    return EXIT_USAGE if failed else 0


def _predictor(args):
    """The run's Predictor, its notes printed on stderr."""
    from tl import runs
    from tl.predict import Predictor

    predictor = Predictor(runs.get(args.run_id, args.runs_dir), engine=args.engine, precision=args.engine_precision)
    for note in (predictor.engine_note, predictor.trust_note):
        if note:
            print(f"note: {note}", file=sys.stderr)
    return predictor


def _predict_batch(args, k: int) -> int:
    """``predict --folder`` / ``--zip`` (or IMAGE files with ``--csv`` / ``--sorted-zip``):
    batched through :mod:`tl.batch`, outputs written only once every photo is done."""
    import contextlib
    from pathlib import Path

    from tl import batch

    if args.images and (args.folder or args.zip):
        raise UserError("Give either IMAGE files or --folder / --zip, not both.")
    for out in (args.csv, args.sorted_zip):
        if out and not Path(out).parent.is_dir():
            raise UserError(f"Cannot write '{out}': its folder does not exist; create it or choose another path.")
    with contextlib.ExitStack() as stack:
        if args.zip:
            photos = stack.enter_context(batch.zip_photos(args.zip, name=f"The zip '{Path(args.zip).name}'"))
        elif args.folder:
            photos = batch.folder_photos(args.folder)
        else:
            photos = [(path, Path(path)) for path in args.images]
        if not photos:
            raise UserError("Give the images to classify: IMAGE files, --folder DIR or --zip FILE.")
        predictor = _predictor(args)
        rows, total = [], len(photos)
        for chunk in batch.iter_batches(predictor, photos, k=k, pass_rate=STRICTNESS[args.strictness],
                                        imagenet=args.json):
            rows += chunk
            for row in chunk:
                if row.error:
                    print(f"error: {row.error}", file=sys.stderr)
                if args.json:
                    print(json.dumps(row.as_json()), flush=True)
            _progress(len(rows) - len(chunk), len(rows), total)
        classified = sum(row.error is None for row in rows)
        if not classified:
            raise UserError(f"None of the {total} photos could be read, so nothing was written.")
        written = _write_outputs(args, rows, dict(photos))
    print(f"Classified {classified} of {total} photos ({total - classified} unreadable)"
          + (f"; wrote {', '.join(written)}." if written else "."), file=sys.stderr)
    return 0


def _progress(before: int, done: int, total: int) -> None:
    """A line on stderr each time another tenth of the photos is done."""
    if done * 10 // total > before * 10 // total or done == total:
        print(f"classified {done:,} of {total:,} photos ({done / total:.0%})", file=sys.stderr, flush=True)


def _write_outputs(args, rows, sources: dict) -> list:
    """Write the CSV (to ``--csv`` or stdout) and the sorted zip; return what was written."""
    from tl import batch
    from tl.files import os_error_sentence

    written = []
    try:
        if args.csv:
            written.append(str(batch.write_csv(rows, args.csv)))
        elif not args.json:
            sys.stdout.write(batch.csv_text(rows))
        if args.sorted_zip:
            batch.sorted_zip(rows, sources.__getitem__, args.sorted_zip)
            written.append(args.sorted_zip)
    except OSError as exc:
        raise UserError(os_error_sentence(exc, exc.filename or args.csv or args.sorted_zip)) from None
    return written


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


def cmd_export(args) -> int:
    """Write one export of a finished run and print the path written."""
    from tl import export, runs

    run = runs.get(args.run_id, args.runs_dir)
    path = export.export(run, args.format, args.out, quantize=args.quantize)
    print(f"Wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
