"""``python -m tl compare``: one run per strategy on the same split (a sweep, :mod:`tl.sweep`),
the advisor's pick beside them, and a table of the results (or one JSON line). Its flags are
the shared config flags of :mod:`tl.cli.train`, for the fields a sweep shares."""

import json
import os
import signal
import sys

from tl.cli.common import EXIT_FAILED, JSON_PROGRESS_HELP, RUNS_DIR_HELP
from tl.cli.train import _add_config_flags, _printer
from tl.config import RunConfig
from tl.errors import UserError

_COMPARE_FLAGS = ("dataset", "data_dir", "backbone", "head", "weights", "epochs", "fine_tune_epochs",
                  "samples_per_class", "image_size", "batch_size", "learning_rate", "synthetic_classes", "seed")


def add_parser(sub) -> None:
    """The ``compare`` command."""
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
