"""TensorFlow against OpenVINO for the frozen-backbone passes, side by side in one run.

    python bench/engines.py [--part speed,folder,accuracy] [--repeats 5] [--photos 2000]

Prints the CPU (model, cores, the flags that matter: AVX-512, AVX512-BF16, AMX) first: the
figures hold for that CPU only.

- ``speed``: images/s of the frozen backbone (pooled features) at 224 px, batch 32, for
  EfficientNet-Lite0 (its real ImageNet weights) and ResNet-50 (random weights: the same
  arithmetic), TensorFlow float32 against OpenVINO fp32 and bf16 (bf16 only where OpenVINO
  reports it on this CPU). Each repeat times every engine once, in an order that alternates
  (ABC, CBA, ...); the ratio is the median of the per-repeat ratios.
- ``folder``: a folder of ``--photos`` JPEG photos (crops of scikit-image's photographs, one
  class per photograph) trained with ``python -m tl train`` at the defaults, alternately with
  ``TL_ENGINE=tensorflow`` and the default engine: the seconds of the run's feature phase (its
  ``features`` event), scan cache warm, feature cache cold, converted model warm (the one
  conversion is timed apart).
- ``accuracy``: the ``bench/head_convergence.py`` tasks (feature_extraction and
  earlier_layer), trained once per engine with their own feature caches: how many test
  predictions of the two saved models agree, and the largest probability difference. Where
  the CPU has bf16, also the digit scans (1,797) and ``lfw_subset`` with bf16 features: the
  served model's accuracy beside fp32's, the features' cosine and mean relative difference.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- speed -----------------------------------------------------------------------------

def passes(backbone: str, weights, cache: Path) -> dict:
    """name -> callable(batch) for every engine this CPU offers."""
    from tl import engine
    from tl.config import RunConfig
    from tl.models import build, feature_extractor

    model = feature_extractor(build(RunConfig(backbone=backbone, weights="imagenet" if weights else "none",
                                              strategy="feature_extraction"), 4, weights=weights))
    found = {"tensorflow fp32": engine.Pass(model, engine.Choice("tensorflow", "fp32"))}
    started = time.perf_counter()
    found["openvino fp32"] = engine.compile(model, key={"bench": backbone}, cache_root=cache, engine="openvino",
                                            precision="fp32")
    print(f"  {backbone}: converted and compiled for OpenVINO in {time.perf_counter() - started:.1f} s")
    if engine.cpu_has_bf16():
        found["openvino bf16"] = engine.compile(model, key={"bench": backbone}, cache_root=cache,
                                                engine="openvino", precision="bf16")
    return found


def speed(repeats: int) -> None:
    from tl import engine

    cache = Path(tempfile.mkdtemp(prefix="engines-bench-"))
    batch = np.random.default_rng(0).uniform(0, 255, (32, 224, 224, 3)).astype("float32")
    print("\nFrozen backbone, pooled features, 224 px, batch 32 (images/s; median of repeats, range):")
    if not engine.cpu_has_bf16():
        print("  bf16: not measured, OpenVINO reports no native bfloat16 on this CPU.")
    for backbone, weights in (("efficientnet_lite0", "imagenet"), ("resnet50", None)):
        runners = passes(backbone, weights, cache)
        names = list(runners)
        for runner in runners.values():  # warm up: tracing, first allocation
            runner(batch)
        rates = {name: [] for name in names}
        for repeat in range(repeats):
            for name in (names if repeat % 2 == 0 else names[::-1]):
                started = time.perf_counter()
                runners[name](batch)
                rates[name].append(len(batch) / (time.perf_counter() - started))
        base = rates["tensorflow fp32"]
        for name in names:
            ratio = statistics.median(r / b for r, b in zip(rates[name], base))
            print(f"  {backbone:20} {name:16} {statistics.median(rates[name]):7.1f} img/s "
                  f"({min(rates[name]):.1f}-{max(rates[name]):.1f})  {ratio:4.2f}x TensorFlow")
    shutil.rmtree(cache, ignore_errors=True)


# -- folder ----------------------------------------------------------------------------

def photo_folder(count: int) -> Path:
    """``count`` JPEG crops (about 500x375, quality 90) of scikit-image's photographs."""
    import skimage.data
    from PIL import Image

    sources = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
               "chelsea": skimage.data.chelsea(), "rocket": skimage.data.rocket()}
    root = Path(tempfile.mkdtemp(prefix="engines-photos-"))
    rng = np.random.default_rng(0)
    for index in range(count):
        name = list(sources)[index % len(sources)]
        photo = sources[name]
        height, width = photo.shape[:2]
        h = int(rng.integers(height // 2, height))
        w = int(rng.integers(width // 2, width))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        picture = Image.fromarray(photo[y:y + h, x:x + w]).resize((500, 375), Image.BILINEAR)
        (root / name).mkdir(exist_ok=True)
        picture.save(root / name / f"{index:05d}.jpg", quality=90)
    return root


def feature_seconds(root: Path, runs_dir: Path, engine: str | None) -> tuple:
    """``(seconds, engine, precision)`` of the features event of one ``tl train`` on ``root``
    (feature cache cold)."""
    shutil.rmtree(runs_dir / ".cache" / "features", ignore_errors=True)
    env = dict(os.environ)
    env.pop("TL_ENGINE", None)
    if engine:
        env["TL_ENGINE"] = engine
    out = subprocess.run([sys.executable, "-m", "tl", "train", "--dataset", "folder", "--data-dir", str(root),
                          "--samples-per-class", "0", "--runs-dir", str(runs_dir), "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    run_id = json.loads(out.stdout.splitlines()[-1])["run_id"]
    events = [json.loads(line) for line in (runs_dir / run_id / "events.jsonl").read_text().splitlines()]
    stored = next(e for e in events if e["type"] == "features" and e.get("cache") == "stored")
    return stored["seconds"], stored.get("engine"), stored.get("engine_precision")


def folder(photos: int, repeats: int) -> None:
    started = time.perf_counter()
    root = photo_folder(photos)
    print(f"\n`tl train` feature phase on {photos} JPEG photos (500x375, 4 classes; written in "
          f"{time.perf_counter() - started:.0f} s):")
    runs_dir = Path(tempfile.mkdtemp(prefix="engines-runs-"))
    first, engine_name, precision = feature_seconds(root, runs_dir, None)  # warms the scan cache, converts once
    print(f"  first run (scan cache cold, model converted): {first:.1f} s on {engine_name} {precision}")
    times = {"tensorflow": [], "default": []}
    for repeat in range(repeats):
        for name in (("tensorflow", "default") if repeat % 2 == 0 else ("default", "tensorflow")):
            seconds, engine_name, precision = feature_seconds(root, runs_dir, "tensorflow" if name == "tensorflow" else None)
            times[name].append(seconds)
            print(f"  {name:10} ({engine_name} {precision}): {seconds:.1f} s", flush=True)
    ratio = statistics.median(t / d for t, d in zip(times["tensorflow"], times["default"]))
    print(f"  median: TensorFlow {statistics.median(times['tensorflow']):.1f} s, default "
          f"{statistics.median(times['default']):.1f} s: {ratio:.2f}x shorter")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runs_dir, ignore_errors=True)


# -- accuracy --------------------------------------------------------------------------

def served_probs(run) -> np.ndarray:
    import keras

    from tl import datasets

    model = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    data = datasets.load(run.config)
    test = data.splits["test"]
    return model.predict(np.stack([data.read(i) for i in test]).astype("float32"), batch_size=32, verbose=0)


def train(cfg, runs_dir: Path, engine: str, precision: str = "fp32"):
    from tl import training

    os.environ["TL_ENGINE"], os.environ["TL_ENGINE_PRECISION"] = engine, precision
    try:
        run = training.prepare(cfg, runs_dir)
        training.execute(run, runs_dir)
    finally:
        del os.environ["TL_ENGINE"], os.environ["TL_ENGINE_PRECISION"]
    return run


def accuracy(per_class: int) -> None:
    from head_convergence import write_folder
    from lite_features import tasks

    from tl import engine
    from tl.config import RunConfig

    print(f"\nSaved models trained on OpenVINO fp32 features against TensorFlow's (test predictions; "
          f"at most {per_class} images per class):")
    print(f"  {'task':30} {'strategy':18} {'test n':>6} {'agree':>6} {'max |dp|':>9} {'acc tf':>7} {'acc ov':>7}")
    for task, (images, labels) in tasks().items():
        root = write_folder(images, labels, per_class)
        for strategy in ("feature_extraction", "earlier_layer"):
            cfg = RunConfig(dataset="folder", data_dir=str(root), strategy=strategy)
            found = {}
            for name in ("tensorflow", "openvino"):
                runs_dir = Path(tempfile.mkdtemp(prefix=f"engines-{name}-"))  # its own feature cache
                run = train(cfg, runs_dir, name)
                assert run.metrics["engine"] == name, run.metrics["engine"]
                found[name] = (run.metrics["test_accuracy"], served_probs(run))
            (acc_tf, p_tf), (acc_ov, p_ov) = found["tensorflow"], found["openvino"]
            agree = float((p_tf.argmax(1) == p_ov.argmax(1)).mean())
            print(f"  {task:30} {strategy:18} {len(p_tf):6d} {agree:6.1%} {np.abs(p_tf - p_ov).max():9.2e} "
                  f"{acc_tf:7.3f} {acc_ov:7.3f}", flush=True)
    if not engine.cpu_has_bf16():
        print("\nbf16: not measured, OpenVINO reports no native bfloat16 on this CPU "
              f"({engine.cpu_flags()}).")
        return
    bf16_accuracy()


def bf16_accuracy() -> None:
    """Full digit scans and lfw_subset: bf16 features against fp32, and the served accuracy."""
    from head_convergence import cached_split, write_folder
    from lite_features import tasks

    from tl.config import RunConfig

    print("\nbf16 features against fp32 (EfficientNet-Lite0, 224 px, feature_extraction):")
    print(f"  {'task':30} {'cosine':>7} {'mean rel':>9} {'fp32 acc':>9} {'bf16 served':>12} {'bf16 on features':>17}")
    chosen = {name: value for name, value in tasks().items() if not name.startswith("brick")}
    for task, (images, labels) in chosen.items():
        root = write_folder(images, labels, len(labels))
        cfg = RunConfig(dataset="folder", data_dir=str(root), samples_per_class=0)
        found = {}
        for precision in ("fp32", "bf16"):
            runs_dir = Path(tempfile.mkdtemp(prefix=f"engines-{precision}-"))
            run = train(cfg, runs_dir, "openvino", precision)
            found[precision] = (run, cached_split(run, runs_dir))
        (run32, split32), (run16, split16) = found["fp32"], found["bf16"]
        a, b = np.concatenate([split32[0], split32[2]]), np.concatenate([split16[0], split16[2]])
        cosine = float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
        relative = float(np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)))
        print(f"  {task:30} {cosine:7.4f} {relative:9.2%} {run32.metrics['test_accuracy']:9.3f} "
              f"{run16.metrics['test_accuracy']:12.3f} {run16.metrics.get('feature_test_accuracy', float('nan')):17.3f}")


def main(argv=None) -> None:
    from tl import engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="speed,folder,accuracy")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args(argv)
    print(f"CPU: {engine.cpu_flags()}")
    print(f"OpenVINO: {engine.openvino_problem() or engine.openvino().get_version()}; "
          f"native bf16: {'yes' if engine.cpu_has_bf16() else 'no'}")
    parts = args.part.split(",")
    if "speed" in parts:
        speed(args.repeats)
    if "folder" in parts:
        folder(args.photos, max(2, args.repeats // 2))
    if "accuracy" in parts:
        accuracy(args.per_class)


if __name__ == "__main__":
    main()
