"""Feature-extraction throughput and memory of the tl pipeline.

Prints, in one run:

1. images/s of feature extraction through the tl pipeline (uint8 images stored at their
   native 32x32, batched by tf.data, resized and preprocessed *inside* the model, pooled
   features streamed to the on-disk cache) and images/s of the bare backbone on tensors
   already resized and preprocessed in memory (same batch size, same input size), with their
   ratio. The two are timed back to back in alternating order, ``--repeats`` times; the
   median of the per-repeat ratios is the figure (and best / best is printed beside it).
2. peak RSS of a whole ``python -m tl train --strategy feature_extraction`` run (extract,
   cache, train the head, evaluate) on the synthetic dataset at two sizes, each in its own
   process (peak RSS from ``os.wait4``).

Targets: ratio >= 0.9; peak RSS grows < 10% from the small size to the large one.

    python bench/feature_throughput.py                    # both parts
    python bench/feature_throughput.py --skip-rss         # throughput only
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def throughput(backbone: str, image_size: int, batch_size: int, images: int, repeats: int) -> dict:
    import numpy as np

    from tl import datasets, features, models
    from tl.backbones import BACKBONES, preprocess_affine
    from tl.config import RunConfig

    cfg = RunConfig(backbone=backbone, weights="none", strategy="feature_extraction",
                    image_size=image_size, batch_size=batch_size)
    model = models.build(cfg, num_classes=4)
    extractor = models.feature_extractor(model)
    bare = model.get_layer("backbone")

    # Raw uint8 images at their stored size (like CIFAR-10 in memory), read by the same
    # Data/pipeline code every dataset goes through.
    raw = np.stack([datasets.synthetic_image(0, i, i % 4) for i in range(images)])
    data = datasets.Data(name="bench", class_names=list("abcd"), labels=np.arange(images) % 4,
                         keys=[str(i) for i in range(images)], fingerprint="bench",
                         image_size=raw.shape[1], reader=lambda i: raw[i])

    # The bare backbone's input: resized and preprocessed ahead of time, in memory.
    import keras

    kernel, bias = preprocess_affine(BACKBONES[backbone].preprocess)
    resized = keras.layers.Resizing(image_size, image_size, antialias=True)(raw.astype("float32"))
    ready = (np.asarray(resized) @ kernel + bias).astype("float32")

    cache = Path(tempfile.mkdtemp(prefix="tl-bench-"))

    def run_pipeline():
        pipelines = (datasets.image_pipeline(data, chunk, batch_size, image_size=image_size)
                     for chunk in features.chunks(np.arange(images), batch_size))
        started = time.perf_counter()
        features.extract(cache, "bench", extractor, pipelines, images, meta={})
        return images / (time.perf_counter() - started)

    def run_bare():
        started = time.perf_counter()
        bare.predict(ready, batch_size=batch_size, verbose=0)
        return images / (time.perf_counter() - started)

    # Warm up both (graph tracing) before timing.
    bare.predict(ready[:batch_size], batch_size=batch_size, verbose=0)
    run_pipeline()
    # This machine's speed drifts (seen: the same model at 25 and at 40 images/s minutes
    # apart), so each repeat times both back to back, in alternating order (ABBA), and the
    # ratio is taken per repeat.
    tl_rates, bare_rates = [], []
    for repeat in range(repeats):
        if repeat % 2:
            bare_rates.append(run_bare())
            tl_rates.append(run_pipeline())
        else:
            tl_rates.append(run_pipeline())
            bare_rates.append(run_bare())
    shutil.rmtree(cache, ignore_errors=True)
    ratios = sorted(t / b for t, b in zip(tl_rates, bare_rates))
    return {"tl": max(tl_rates), "bare": max(bare_rates), "tl_all": tl_rates, "bare_all": bare_rates,
            "median_ratio": ratios[len(ratios) // 2] if len(ratios) % 2 else
            (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2}


def peak_rss(images: int, backbone: str, image_size: int, batch_size: int, classes: int = 4) -> dict:
    """Peak RSS (MiB) and wall time of a feature_extraction run on ``images`` synthetic images."""
    runs_dir = Path(tempfile.mkdtemp(prefix="tl-bench-rss-"))
    cmd = [sys.executable, "-m", "tl", "train", "--dataset", "synthetic", "--synthetic-classes",
           str(classes), "--samples-per-class", str(images // classes), "--backbone", backbone,
           "--weights", "none", "--strategy", "feature_extraction", "--head", "linear",
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--epochs", "1",
           "--runs-dir", str(runs_dir), "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    shutil.rmtree(runs_dir, ignore_errors=True)
    if status != 0:
        raise SystemExit(f"training {images} images failed: {out[-500:]}")
    return {"images": images, "peak_rss_mib": usage.ru_maxrss / 1024, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=384, help="images per throughput measurement")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--sizes", default="5000,50000", help="dataset sizes for the memory part")
    parser.add_argument("--rss-image-size", type=int, default=32)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    # Memory first, while this process is small: Linux carries a parent's peak RSS into a
    # child's ru_maxrss across fork and exec, so once TensorFlow is loaded here every child
    # would report at least this process's size.
    if not args.skip_rss:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(f"Peak RSS of `python -m tl train --strategy feature_extraction` "
              f"({args.backbone} at {args.rss_image_size}px, synthetic data generated on the fly)")
        results = [peak_rss(n, args.backbone, args.rss_image_size, args.batch_size) for n in sizes]
        for r in results:
            print(f"  {r['images']:>7,} images: peak RSS {r['peak_rss_mib']:8.1f} MiB   ({r['seconds']:.0f} s)")
        growth = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"] - 1
        print(f"  growth {sizes[0]:,} -> {sizes[-1]:,}: {growth * 100:+.1f}%   (target < 10%)\n")

    if args.skip_throughput:
        return
    print(f"Feature extraction, {args.backbone} at {args.image_size}px, batch {args.batch_size}, "
          f"{args.images} images, {args.repeats} repeats")
    rates = throughput(args.backbone, args.image_size, args.batch_size, args.images, args.repeats)
    print(f"  tl pipeline (uint8 32px -> resize+preprocess in model -> cache): {rates['tl']:8.1f} images/s"
          f"   runs: {', '.join(f'{r:.1f}' for r in rates['tl_all'])}")
    print(f"  bare backbone (pre-resized, preprocessed float32 tensors):      {rates['bare']:8.1f} images/s"
          f"   runs: {', '.join(f'{r:.1f}' for r in rates['bare_all'])}")
    print(f"  ratio tl / bare: median of per-repeat ratios {rates['median_ratio']:.3f}, "
          f"best / best {rates['tl'] / rates['bare']:.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
