"""Reproduce the seed write-ups' experiments with this project, and print ours beside theirs.

    python bench/reproduce_seeds.py [--quick] [--only NAME ...] [--runs-dir DIR] [--list]

Needs internet on first use (ImageNet weights for ResNet50, CIFAR-10 and Freiburg Groceries
download once into the Keras cache) and, for the 224-pixel CIFAR-10 runs, ideally a GPU:
on a 2-core CPU they take days. ``--quick`` caps each class at 100 images and runs fewer
epochs, for a smoke run of the whole table in under an hour on a CPU (the numbers are then
not comparable with the seeds'). Offline, each experiment prints the one-sentence reason it
could not run, and the table says "not run".

Every experiment is an ordinary run (see ``python -m tl runs``), so the app shows its curves,
confusion matrix and mistakes, and Compare can put them side by side.
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: str  # which write-up
    theirs: str  # what it reported
    config: dict
    quick: dict = field(default_factory=dict)  # overrides for --quick


EXPERIMENTS = [
    Experiment(
        "cifar10_feature_extraction_224", "000",
        "ResNet50 frozen features + GAP/Dropout(0.3)/Dense head (no test figure; the 4-case table)",
        dict(dataset="cifar10", backbone="resnet50", strategy="feature_extraction", head="gap_dropout_dense",
             dropout=0.3, image_size=224, samples_per_class=0, epochs=10, batch_size=64),
        dict(samples_per_class=100, epochs=3, image_size=96)),
    Experiment(
        "cifar10_fine_tune_224", "001",
        "94% validation after 10 epochs, 96% test claimed (last block unfrozen, RMSprop, 32->224)",
        dict(dataset="cifar10", backbone="resnet50", strategy="fine_tune", head="dense_stack", optimizer="rmsprop",
             image_size=224, samples_per_class=0, epochs=2, fine_tune_epochs=8, fine_tune_layers=10,
             learning_rate=1e-3, fine_tune_learning_rate=1e-5, batch_size=64),
        dict(samples_per_class=100, epochs=1, fine_tune_epochs=2, image_size=96)),
    Experiment(
        "groceries_perceptron", "002",
        "perceptron on raw pixels: about chance (1/25 = 4%)",
        dict(dataset="freiburg_groceries", backbone="perceptron", weights="none", strategy="scratch", head="linear",
             image_size=64, samples_per_class=0, epochs=10, class_weight="balanced"),
        dict(samples_per_class=100, epochs=3)),
    Experiment(
        "groceries_feature_extraction", "002",
        "cached avg_pool features + perceptron: about 80% validation",
        dict(dataset="freiburg_groceries", backbone="resnet50", strategy="feature_extraction", head="linear",
             image_size=224, samples_per_class=0, epochs=20, class_weight="balanced"),
        dict(samples_per_class=100, epochs=5, image_size=128)),
    Experiment(
        "groceries_fine_tune", "002",
        "fine-tuning the last 11 layers with a slower optimizer: 72%",
        dict(dataset="freiburg_groceries", backbone="resnet50", strategy="fine_tune", head="linear",
             image_size=224, samples_per_class=0, epochs=10, fine_tune_epochs=10, fine_tune_layers=11,
             fine_tune_learning_rate=1e-5, class_weight="balanced", augment=True),
        dict(samples_per_class=100, epochs=2, fine_tune_epochs=2, image_size=128)),
]


def configs(quick: bool) -> dict:
    """Name -> validated RunConfig for every experiment."""
    from tl.config import RunConfig

    found = {}
    for exp in EXPERIMENTS:
        values = {**exp.config, **(exp.quick if quick else {}), "name": f"seed{exp.seed}:{exp.name}",
                  "tags": ["reproduce_seeds", f"seed:{exp.seed}"] + (["quick"] if quick else [])}
        found[exp.name] = RunConfig(**values)
    return found


def run_one(cfg, runs_dir) -> dict:
    from tl import training
    from tl.cli.train import format_event
    from tl.errors import UserError

    try:
        run = training.prepare(cfg, runs_dir)
    except UserError as exc:
        return {"status": "not run", "reason": str(exc)}

    def show(event):
        line = format_event(event)
        if line and event["type"] != "batch":
            print("   ", line, flush=True)

    status = training.execute(run, runs_dir, on_event=show)
    metrics = run.metrics
    return {"status": status["status"], "reason": status.get("reason"), "run_id": run.id,
            "test_accuracy": metrics.get("test_accuracy"), "best_val_accuracy": metrics.get("best_val_accuracy"),
            "train_seconds": metrics.get("train_seconds"), "device": metrics.get("device")}


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets: a smoke run, not comparable")
    parser.add_argument("--only", nargs="+", choices=[e.name for e in EXPERIMENTS])
    parser.add_argument("--runs-dir", help="where the runs go (default: $TL_RUNS_DIR or ./runs)")
    parser.add_argument("--list", action="store_true", help="print the experiments' configs and exit")
    args = parser.parse_args(argv)

    chosen = configs(args.quick)
    if args.list:
        for name, cfg in chosen.items():
            print(name, json.dumps(cfg.to_dict()))
        return 0
    results = {}
    for exp in EXPERIMENTS:
        if args.only and exp.name not in args.only:
            continue
        print(f"== {exp.name} (seed {exp.seed})", flush=True)
        results[exp.name] = found = run_one(chosen[exp.name], args.runs_dir)
        if found["status"] != "done":
            print(f"   {found['status']}: {found.get('reason')}", flush=True)

    print()
    print(f"{'experiment':32} {'seed':4}  {'ours: test':>10} {'best val':>8} {'train s':>8}  status / seed reported")
    for exp in EXPERIMENTS:
        if exp.name not in results:
            continue
        r = results[exp.name]
        took = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f}"
        print(f"{exp.name:32} {exp.seed:4}  {_pct(r.get('test_accuracy')):>10} {_pct(r.get('best_val_accuracy')):>8} "
              f"{took:>8}  {r['status']}; seed: {exp.theirs}")
    if args.quick:
        print("\n--quick: capped data and epochs; these numbers are a smoke test, not the seeds' setting.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
