"""Which photos to add next (issue 32): the ranking of ``tl.suggest`` against random picks, and
updating a run with a few new photos.

    python bench/active.py [--seeds 5] [--rounds 5] [--tasks digits,photos] [--work DIR] [--skip-update]

1. Active learning, per task: every image's pooled features once (EfficientNet-Lite0 with its
   ImageNet weights from pip, 224 px, the last layer: the feature_extraction defaults), through
   ``tl.features.features_of`` and its cache. Per seed: a fixed, stratified test set (20 per
   class for the digits, 10 per class for the crops: at least 100), a start of 5 photos per
   class, the rest the pool. Each round fits the exact head training fits
   (``tl.head_fit.fit_softmax`` on features standardised with the labelled photos' statistics)
   on the labelled photos, scores the test set, then adds 2 x classes photos chosen over the
   whole pool: by ``tl.suggest.rank`` (least confident first, spread out in the feature
   space; the head's own probabilities, with no temperature and no "none of my classes"
   rule, which needs held-out photos a 5-per-class start does not have) or at random. Prints
   the test accuracy after each round, mean and standard error over the seeds, and the
   verdict the issue asks for (never worse than random by more than one standard error, better
   at the end).
   Tasks (``bench/check.py``'s loaders, as ``bench/calibration.py`` uses them): the digit
   scans 0-9 (scikit-learn's 8x8 scans, 1,797) and photo crops (64-px crops of scikit-image's
   photographs, a class per photo, at most 40 each).
2. Updating a run: a made dataset of 600 digit scans (60 per digit), a feature_extraction run
   trained on it, then 10 new scans (one per digit) added and the update queued through the
   app's job manager (``tl.jobs.JobManager``, a worker process of its own, TensorFlow's import
   included): the seconds from the click (``tl.update.start``) to the run's status ``done``,
   and the new run's feature events (photos reused from the cache, photos extracted).

``--work DIR`` keeps the images, the feature cache and the runs there (reused next time).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TASKS = ("digits", "photos")
START_PER_CLASS = 5
TEST_PER_CLASS = {"digits": 20, "photos": 10}


# -- features -----------------------------------------------------------------------------

def task_images(name: str) -> dict:
    """class -> uint8 images of a task, from ``bench/check.py``'s loaders."""
    from check import photo_crops, tasks

    if name == "digits":
        return tasks()["digits"]
    return photo_crops(64, per_photo=40)


def task_features(name: str, work: Path) -> tuple:
    """``(features (n, dim), labels (n,), class names)`` of a task's images, written once as a
    folder of PNGs and passed through the product's feature cache."""
    from check import write_folder

    from tl import features
    from tl.config import RunConfig
    from tl.data.folder import folder_data
    from tl.models import build, feature_extractor
    from tl.paths import cache_root

    root = work / "data" / name
    if not root.exists():
        write_folder(root, task_images(name))
    cfg = RunConfig(dataset="folder", data_dir=str(root), strategy="feature_extraction")
    data = folder_data("folder", root, cfg.image_size, work / "runs")
    found = features.features_of(
        data, lambda: feature_extractor(build(cfg, data.num_classes, weights="imagenet")),
        root=cache_root(work / "runs"), backbone=cfg.backbone, weights="imagenet", cut=None,
        image_size=cfg.image_size, batch_size=cfg.batch_size, emit=lambda *a, **k: None)
    return found.store.read(np.arange(len(data))), data.labels, data.class_names


# -- one active-learning curve ----------------------------------------------------------------

def fit_and_score(x, y, labelled, rows_to_score, k: int) -> tuple:
    """The exact head on the ``labelled`` rows; ``(its probabilities on rows_to_score)``."""
    from tl.head_fit import Matrix, fit_softmax

    train = Matrix(x, labelled)
    mean, variance = train.own_statistics()
    train.use_statistics(mean, variance)
    fit = fit_softmax(train, y[labelled], k)
    scored = (x[rows_to_score] - mean) / np.sqrt(variance)
    logits = scored @ fit.kernel + fit.bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def split(y, seed: int, test_per_class: int) -> tuple:
    """``(test rows, start rows, pool rows)`` drawn per class with the seed."""
    rng = np.random.default_rng([seed, 32])
    test, start, pool = [], [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test += list(members[:test_per_class])
        start += list(members[test_per_class:test_per_class + START_PER_CLASS])
        pool += list(members[test_per_class + START_PER_CLASS:])
    return np.sort(test), np.sort(start), np.sort(pool)


def curve(x, y, k: int, seed: int, rounds: int, test_per_class: int, method: str) -> list:
    """Test accuracy after the start and after each round of ``2 * k`` photos chosen by ``method``."""
    from tl.suggest import rank, values

    test, labelled, pool = split(y, seed, test_per_class)
    labelled, pool = list(labelled), np.asarray(pool)
    rng = np.random.default_rng([seed, 33])
    accuracies = []
    for round_number in range(rounds + 1):
        probs = fit_and_score(x, y, np.asarray(labelled), np.concatenate([test, pool]), k)
        accuracies.append(float((probs[:len(test)].argmax(axis=1) == y[test]).mean()))
        if round_number == rounds:
            break
        if method == "ranked":
            pool_probs = probs[len(test):]
            order = rank(values(pool_probs.max(axis=1), k), x[pool])
        else:
            order = rng.permutation(len(pool))
        chosen = order[:2 * k]
        labelled += list(pool[chosen])
        pool = np.delete(pool, chosen)
    return accuracies


def active_learning(tasks, seeds: int, rounds: int, work: Path) -> None:
    for name in tasks:
        started = time.perf_counter()
        x, y, class_names = task_features(name, work)
        k = len(class_names)
        extracted = time.perf_counter() - started
        test_per_class = TEST_PER_CLASS[name]
        curves = {method: np.array([curve(x, y, k, seed, rounds, test_per_class, method) for seed in range(seeds)])
                  for method in ("ranked", "random")}
        print(f"\n{name}: {len(y)} images in {k} classes, {test_per_class * k} fixed test photos per seed, start "
              f"{START_PER_CLASS} per class, {rounds} rounds of {2 * k} photos, {seeds} seeds "
              f"(features {extracted:.1f} s, curves {time.perf_counter() - started - extracted:.1f} s)")
        print(f"{'round':>5} {'labelled':>8}  {'ranked':>15}  {'random':>15}  {'ranked - random':>15}")
        verdict = True
        for r in range(rounds + 1):
            cells = []
            for method in ("ranked", "random"):
                column = curves[method][:, r]
                cells.append((column.mean(), column.std(ddof=1) / np.sqrt(seeds)))
            difference = curves["ranked"][:, r] - curves["random"][:, r]
            se = difference.std(ddof=1) / np.sqrt(seeds)
            verdict &= bool(cells[0][0] >= cells[1][0] - cells[1][1])
            print(f"{r:>5} {k * START_PER_CLASS + 2 * k * r:>8}  {cells[0][0]:7.3f} ± {cells[0][1]:.3f}  "
                  f"{cells[1][0]:7.3f} ± {cells[1][1]:.3f}  {difference.mean():+7.3f} ± {se:.3f}")
        better = curves["ranked"][:, -1].mean() > curves["random"][:, -1].mean()
        print(f"verdict: never worse than random by more than one standard error: {'yes' if verdict else 'NO'}; "
              f"better at the end: {'yes' if better else 'NO'}")


# -- updating a 600-photo run --------------------------------------------------------------------

def _png(image) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def update_timing(work: Path) -> None:
    from check import tasks

    from tl import jobs, runs, training, update
    from tl.config import RunConfig
    from tl.data import made

    os.environ["TL_DATA_DIR"] = str(work / "update-data")
    runs_dir = work / f"update-runs-{time.time_ns()}"  # a cache of its own: the 10 photos are new to it
    scans = tasks()["digits"]
    name = f"digits {time.time_ns()}"
    made.create_dataset(name)
    for digit in range(10):
        made.add_photos(name, str(digit), [(f"{digit}-{i}.png", _png(scans[str(digit)][i])) for i in range(60)])
    cfg = RunConfig(dataset=f"data:{name}", strategy="feature_extraction", samples_per_class=0)
    first = training.prepare(cfg, runs_dir)
    training.execute(first, runs_dir)
    assert first.status()["status"] == "done", first.status()
    for digit in range(10):
        made.add_photos(name, str(digit), [(f"{digit}-new.png", _png(scans[str(digit)][60]))])

    manager = jobs.JobManager(runs_dir)
    try:
        clicked, clicked_at = time.perf_counter(), time.time()
        new = update.start(first, manager.submit, runs_dir)
        while runs.get(new.id, runs_dir).status()["status"] in ("queued", "running"):
            time.sleep(0.1)
        seconds = time.perf_counter() - clicked
    finally:
        manager.shutdown()
    status = new.status()
    events = [e for e in new.events()[0] if e["type"] == "features"]
    stored = next((e for e in events if e.get("cache") in ("stored", "hit")), {})
    record = new.metrics.get("update", {})
    print(f"\nupdate of a 600-photo feature_extraction run (EfficientNet-Lite0, 224 px) with 10 new photos: "
          f"status {status['status']}, {seconds:.1f} s from the click to done through the worker process "
          f"(target < 15 s: {'met' if seconds < 15 else 'NOT met'}); the run's time estimate was "
          f"{status.get('estimate_seconds')} s, the first run's {first.status().get('estimate_seconds')} s")
    extracted = stored.get("images") if stored.get("cache") == "stored" else 0
    before = next(e for e in first.events()[0] if e["type"] == "features" and e.get("cache") in ("stored", "hit"))
    print(f"feature cache of the update: {stored.get('reused')} photos reused (hits), {extracted} extracted "
          f"({stored.get('seconds')} s); the first run extracted {before['images'] - before.get('reused', 0)} in "
          f"{before['seconds']} s")
    times = {e["type"]: e["t"] for e in reversed(new.events()[0])}  # each kind's first event
    stored_at = next(e["t"] for e in new.events()[0] if e["type"] == "features" and e.get("cache") in ("stored", "hit"))
    print(f"  where the time went: click to the worker running {times['status'] - clicked_at:.1f} s, TensorFlow's "
          f"import and the device {times['device'] - times['status']:.1f} s, data and model "
          f"{times['model'] - times['device']:.1f} s, features {stored_at - times['model']:.1f} s, head, trust and "
          f"saving {status['finished'] - stored_at:.1f} s (load average {os.getloadavg()[0]:.1f})")
    print(f"comparison: version {record.get('version_before')} -> {record.get('version_after')}, added "
          f"{record.get('added')}, {record.get('shared_test_photos')} shared test photos, test accuracy "
          f"{record.get('before', {}).get('test_accuracy')} -> {record.get('after', {}).get('test_accuracy')}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--work", help="keep images, caches and runs here")
    parser.add_argument("--skip-update", action="store_true", help="only the active-learning curves")
    parser.add_argument("--skip-curves", action="store_true", help="only the update timing")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="active-bench-"))
    print(f"work folder: {work}; {os.cpu_count()} CPU cores")
    if not args.skip_curves:
        active_learning([t for t in args.tasks.split(",") if t], args.seeds, args.rounds, work)
    if not args.skip_update:
        update_timing(work)


if __name__ == "__main__":
    main()
