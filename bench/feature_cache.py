"""Feature-cache reuse: a second feature_extraction run on the same data, with another head.

    python bench/feature_cache.py [--backbone resnet50] [--size 96] [--per-class 100] [--pairs 2]

Each pair uses a fresh cache folder: run 1 extracts the backbone's features and trains a
``linear`` head (cache miss); run 2 trains a ``gap_dropout_dense`` head on the same data and
reuses them (cache hit). Prints each run's wall time (prepare + execute, in this process,
TensorFlow already loaded) and the speed-up miss / hit per pair. The second run trains the
same number of epochs, so the speed-up is what skipping the backbone saves.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()

    from tl import training
    from tl.config import RunConfig

    def one(runs_dir, head):
        cfg = RunConfig(dataset="synthetic", backbone=args.backbone, weights="none", strategy="feature_extraction",
                        head=head, image_size=args.size, samples_per_class=args.per_class, synthetic_classes=4,
                        epochs=args.epochs, batch_size=32)
        started = time.perf_counter()
        run = training.prepare(cfg, runs_dir)
        status = training.execute(run, runs_dir)
        seconds = time.perf_counter() - started
        assert status["status"] == "done", status
        return seconds, run.metrics

    one(tempfile.mkdtemp(), "linear")  # warm-up: TensorFlow and the graphs' first traces
    speedups = []
    images = None
    for pair in range(args.pairs):
        runs_dir = tempfile.mkdtemp(prefix="cache-bench-")
        miss, miss_metrics = one(runs_dir, "linear")
        hit, hit_metrics = one(runs_dir, "gap_dropout_dense")
        assert (miss_metrics["feature_cache"], hit_metrics["feature_cache"]) == ("miss", "hit")
        images = miss_metrics["train_size"] + miss_metrics["val_size"] + miss_metrics["test_size"]
        speedups.append(miss / hit)
        print(f"pair {pair + 1}: miss {miss:6.1f} s (extraction {miss_metrics['extract_seconds']:.1f} s), "
              f"hit {hit:6.1f} s -> speed-up {miss / hit:.2f}x")
    print(f"{args.backbone} at {args.size}px, {images} images, {args.epochs} epochs, {os.cpu_count()} CPU cores: "
          f"median speed-up of a run that reuses cached features: {statistics.median(speedups):.2f}x")


if __name__ == "__main__":
    main()
