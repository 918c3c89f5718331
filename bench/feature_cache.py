"""Feature-cache reuse, and fitting a head on many cached features.

    python bench/feature_cache.py [--backbone efficientnet_lite0] [--size 224] [--per-class 250]
                                  [--pairs 3] [--rows 50000] [--skip-runs]

1. Pairs of runs on the same data, side by side (TensorFlow already loaded, prepare + execute
   in this process). Each pair uses a fresh cache folder: run 1 extracts the backbone's
   features (ImageNet weights) and fits the default head (cache miss); run 2 fits a
   ``linear`` head on the same data and reuses them (cache hit). Prints each run's wall time
   and the speed-up miss / hit per pair.
2. Fitting a head on ``--rows`` cached 1280-d features (10 classes, generated clusters in a
   feature-cache file on disk): the exact fit (standardise + L-BFGS) in a child process,
   its seconds and peak RSS, once with the features in memory and once streamed from the
   memory map in chunks (what happens above the 1 GiB in-memory limit).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_pairs(args) -> None:
    from tl import training
    from tl.config import RunConfig

    def one(runs_dir, head):
        cfg = RunConfig(dataset="synthetic", backbone=args.backbone, strategy="feature_extraction", head=head,
                        image_size=args.size, samples_per_class=args.per_class, synthetic_classes=4)
        started = time.perf_counter()
        run = training.prepare(cfg, runs_dir)
        status = training.execute(run, runs_dir)
        seconds = time.perf_counter() - started
        assert status["status"] == "done", status
        return seconds, run.metrics

    one(tempfile.mkdtemp(), "linear")  # warm-up: TensorFlow and the graphs' first traces
    speedups = []
    for pair in range(args.pairs):
        runs_dir = tempfile.mkdtemp(prefix="cache-bench-")
        miss, miss_metrics = one(runs_dir, "gap_dropout_dense")
        hit, hit_metrics = one(runs_dir, "linear")
        assert (miss_metrics["feature_cache"], hit_metrics["feature_cache"]) == ("miss", "hit")
        speedups.append(miss / hit)
        print(f"pair {pair + 1}: miss {miss:6.2f} s (extraction {miss_metrics['extract_seconds']:.2f} s, "
              f"test acc {miss_metrics['test_accuracy']:.3f}), hit {hit:5.2f} s (test acc "
              f"{hit_metrics['test_accuracy']:.3f}) -> speed-up {miss / hit:.1f}x", flush=True)
    images = 4 * args.per_class
    print(f"{args.backbone} at {args.size} px, {images} images, {os.cpu_count()} CPU cores: median speed-up of "
          f"a run that reuses cached features: {statistics.median(speedups):.1f}x")


_CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from tl import features, head_fit
store = features.FeatureStore({path!r})
labels = np.load({labels!r})
if {streamed}:
    head_fit.IN_MEMORY_BYTES = 0
started = time.perf_counter()
rows = np.arange(len(store))
train = head_fit.Matrix(store, rows)
train.use_statistics(*train.own_statistics())
fit = head_fit.fit_softmax(train, labels, 10)
seconds = time.perf_counter() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(f"{{seconds:.2f}} {{peak:.0f}} {{fit.iterations}} {{fit.converged}} {{fit.history[-1]['accuracy']:.3f}}")
"""


def big_fit(rows: int, dim: int = 1280) -> None:
    import numpy as np

    folder = Path(tempfile.mkdtemp(prefix="big-features-"))
    path = folder / "features.npy"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, rows)
    centres = rng.normal(0, 1, (10, dim)).astype(np.float32)
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, 8192):  # ReLU-like non-negative features, as a backbone gives
        stop = min(start + 8192, rows)
        matrix[start:stop] = np.maximum(centres[labels[start:stop]] * 0.5
                                        + rng.normal(0, 1, (stop - start, dim)).astype(np.float32), 0)
    matrix.flush()
    del matrix
    np.save(folder / "labels.npy", labels)
    size = rows * dim * 4 / 2 ** 20
    for streamed in (False, True):
        code = _CHILD.format(repo=str(REPO), path=str(path), labels=str(folder / "labels.npy"), streamed=streamed)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        seconds, peak, iterations, converged, accuracy = out
        how = "streamed in 8,192-row chunks" if streamed else "in memory"
        print(f"exact head fit on {rows:,} cached {dim}-d features ({size:,.0f} MiB on disk), {how}: "
              f"{float(seconds):.1f} s, {iterations} L-BFGS iterations (converged: {converged}, train acc "
              f"{accuracy}), peak RSS {float(peak):,.0f} MiB", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--skip-runs", action="store_true", help="only the big head fit")
    args = parser.parse_args(argv)
    if not args.skip_runs:
        run_pairs(args)
    big_fit(args.rows)


if __name__ == "__main__":
    main()
