"""How fast `tl check` is once the features are cached, how much memory it takes, and how well
it finds flipped labels, near-duplicates and outliers on real images that work offline.

    python bench/check.py [--part speed,noise,geometry,map] [--sizes 400,4000,40000]
                          [--image-size 224] [--seeds 3]

1. speed: :func:`tl.findings.analyse` (everything the check does after the feature pass: the
   5 out-of-fold exact fits, suspects, near-duplicates, outliers, the map) on a cached
   float32 feature file of N rows x 1280, each N in a fresh process, so its peak RSS
   (``ru_maxrss``) is the check's. The features are synthetic but shaped like the
   backbone's: 10 class centres plus noise, clipped at 0 as ReLU6 output is, 10% of the
   labels flipped (so the fits converge as on real features and the suspects are real work).
2. noise: precision at k (k = the number flipped; the share of the k most suspicious that
   were flipped) and the median rank of the flipped ones, at 5% and 20% of the labels
   flipped to a random other class, mean of ``--seeds`` draws, last layer against the
   earlier cut, on the digit scans (1,797, 10 classes), scikit-image's LFW subset (200,
   faces vs not) and crops of scikit-image's photographs (a class per photo). The features
   are extracted once per task and cut through the same cache as the app; the flips are made
   on the labels (features do not depend on them), then the check's own code runs.
3. geometry: the near-duplicate threshold and the outlier fence, measured: copies (resized to
   3/4, saved as JPEG quality 85) of 10 images planted among distinct real images, and one
   image of another kind; how many copies reach the threshold, how many pairs of distinct
   images do, and whether the planted outlier is flagged.
4. map: PCA against scikit-learn's t-SNE on the digit features: seconds, and how often an
   image's 5 nearest neighbours on the map share its class.
"""

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- 1. speed and memory --------------------------------------------------------------------

def synthetic_store(path: Path, rows: int, dim: int = 1280, classes: int = 10, seed: int = 0):
    """A feature file like the cache's, written in blocks; returns (store, noisy labels)."""
    from tl.features import FeatureStore

    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(classes, dim))).astype(np.float32) * 2
    labels = np.arange(rows) % classes
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    for start in range(0, rows, 4096):
        part = labels[start:start + 4096]
        matrix[start:start + len(part)] = np.clip(centres[part] + rng.normal(scale=1.5, size=(len(part), dim)), 0, 6)
    matrix.flush()
    del matrix
    noisy = labels.copy()
    flipped = rng.choice(rows, rows // 10, replace=False)
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return FeatureStore(path), noisy


def one_size(rows: int) -> dict:
    """The check on ``rows`` synthetic cached features, in this process."""
    from tl.findings import analyse

    folder = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        store, labels = synthetic_store(folder / "features.npy", rows)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        found = analyse(store, labels, 10)
        seconds = time.perf_counter() - started
        return {"rows": rows, "seconds": round(seconds, 1), "timings": found.timings,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_before_mib": round(before, 1), "matrix_mib": round(rows * 1280 * 4 / 2**20, 1),
                "suspects": int(found.issues.suspect.sum()), "pairs": len(found.pairs)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def speed(sizes) -> None:
    print("\n1. The check after the features are cached (synthetic 1280-d features, 10 classes, 10% flipped; "
          f"{os.cpu_count()} CPU cores)")
    print(f"{'images':>7} {'matrix':>8} {'total s':>8} {'folds':>7} {'dupl.':>7} {'outl.':>6} {'map':>6} "
          f"{'peak RSS':>9}")
    for rows in sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(rows)], capture_output=True, text=True,
                              check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        t = r["timings"]
        print(f"{rows:7,d} {r['matrix_mib']:6.0f} MiB {r['seconds']:8.1f} {t['folds']:7.1f} {t['duplicates']:7.1f} "
              f"{t['outliers']:6.1f} {t['map']:6.1f} {r['peak_rss_mib']:5.0f} MiB", flush=True)


# -- real-image tasks ------------------------------------------------------------------------

def _png(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def photo_crops(side: int, per_photo: int = 12, seed: int = 0, at_least: int = 5) -> dict:
    """class (photo) -> non-overlapping ``side``-pixel crops of scikit-image's photographs
    (the star field left out: a nearly black image), for photos with ``at_least`` of them."""
    import skimage.data

    rng = np.random.default_rng(seed)
    crops = {}
    for name in ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "retina", "immunohistochemistry",
                 "brick", "grass", "gravel", "cell", "moon", "stereo_motorcycle"):
        photo = getattr(skimage.data, name)()
        photo = np.asarray(photo[0] if isinstance(photo, tuple) else photo)
        photo = photo[..., :3] if photo.ndim == 3 else photo
        h, w = photo.shape[:2]
        cells = [(y, x) for y in range(0, h - side + 1, side) for x in range(0, w - side + 1, side)]
        if len(cells) >= at_least:
            crops[name] = [photo[y:y + side, x:x + side] for y, x in
                           (cells[c] for c in rng.permutation(len(cells))[:per_photo])]
    return crops


def tasks() -> dict:
    """name -> class -> list of uint8 images."""
    import skimage.data
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = (digits.images / 16 * 255).round().astype(np.uint8)
    faces = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    return {"digits": {str(c): list(scans[digits.target == c]) for c in range(10)},
            "lfw": {"face": list(faces[:100]), "not_face": list(faces[100:])},
            "photo crops": photo_crops(160)}


def write_folder(root: Path, classes: dict) -> None:
    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            (root / name / f"{i:04d}.png").write_bytes(_png(image))


def cached_features(root: Path, runs_dir: Path, image_size: int, cut: str):
    """(features matrix, Data) of a folder through the check's own pass and cache."""
    from tl import check, datasets, features
    from tl.paths import cache_root

    cfg = check.check_config(cut, dataset="folder", data_dir=str(root), image_size=image_size)
    keys = []
    check.run_check(cfg, runs_dir, on_event=lambda e: keys.append(e["key"])
                    if e["type"] == "features" and e["cache"] in ("hit", "stored") else None)
    data = datasets.load(cfg, runs_dir)
    return features.lookup(cache_root(runs_dir), keys[-1]).read(np.arange(len(data))), data


def noise(image_size: int, seeds: int, work: Path) -> None:
    from tl.findings import label_issues, out_of_fold

    print(f"\n2. Flipped labels found: precision at k / median rank of the flipped (share of the ranking), "
          f"mean of {seeds} draws, {image_size} px")
    print(f"{'task':24} {'features':9} {'OOF acc':>7} {'5%: P@k':>8} {'med.rank':>8} {'20%: P@k':>9} {'med.rank':>8}")
    for task, classes in tasks().items():
        root = work / task.replace(" ", "_")
        write_folder(root, classes)
        for cut in ("last", "earlier"):
            x, data = cached_features(root, work / "runs", image_size, cut)
            k = data.num_classes
            clean = out_of_fold(x, data.labels, k)
            cells = []
            for rate in (0.05, 0.20):
                precision, median = [], []
                for seed in range(seeds):
                    rng = np.random.default_rng([seed, int(rate * 100)])
                    flipped = rng.choice(len(x), max(1, round(rate * len(x))), replace=False)
                    noisy = data.labels.copy()
                    noisy[flipped] = (noisy[flipped] + rng.integers(1, k, len(flipped))) % k
                    issues = label_issues(noisy, out_of_fold(x, noisy, k, seed=seed))
                    rank = np.empty(len(x), dtype=np.int64)
                    rank[issues.ranking] = np.arange(1, len(x) + 1)
                    precision.append(np.isin(issues.ranking[:len(flipped)], flipped).mean())
                    median.append(np.median(rank[flipped]) / len(x))
                cells.append(f"{np.mean(precision):8.3f} {np.mean(median):8.3f}")
            accuracy = (clean.argmax(axis=1) == data.labels).mean()
            print(f"{task + f' ({len(x)}, {k} cl.)':24} {cut:9} {accuracy:7.3f} {cells[0]}  {cells[1]}", flush=True)


# -- 3. near-duplicates and outliers -----------------------------------------------------------

def copy_bytes(image) -> bytes:
    """A resized (3/4) copy saved as a JPEG of quality 85 (tiny scans: enlarged 2x instead)."""
    from PIL import Image

    picture = Image.fromarray(image).convert("RGB")
    factor = 0.75 if min(picture.size) >= 64 else 2.0
    picture = picture.resize((round(picture.width * factor), round(picture.height * factor)), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def crop_side(size: int) -> int:
    return 2 * size if size <= 128 else 320


def large_crops(side: int) -> dict:
    """Crops of ``side`` pixels of every photo that has one, in two classes (photos taken in
    turn): too few photos have 5 such crops for a class each."""
    groups = {"a": [], "b": []}
    for i, crops in enumerate(photo_crops(side, per_photo=8, at_least=1).values()):
        groups["ab"[i % 2]].extend(crops)
    return groups


def geometry(work: Path) -> None:
    import skimage.data

    from tl.findings import DUPLICATE_SIMILARITY, near_duplicates, outliers

    print(f"\n3. Planted copies among distinct images, and one image of another kind; threshold "
          f"{DUPLICATE_SIMILARITY}: copies found / planted, and pairs of distinct images at or above it; outlier "
          "flagged (flags in all)")
    print(f"{'task':30} {'size':>4} {'features':9} {'as they are':>12} {'standardised':>13} {'outlier':>12}")
    scans = tasks()["digits"]
    setups = [("photo crops", None), ("lfw (25 px, enlarged)", "lfw"), ("digits (8 px)", "digits")]
    for title, kind in setups:
        for size in (96, 224):
            if kind is None:  # crops twice the input size (at 224 px: 320 px, copies still larger than the input)
                classes = photo_crops(crop_side(size), per_photo=8) if size <= 128 else large_crops(crop_side(size))
                other = np.asarray(scans["3"][0])
            elif kind == "lfw":
                classes = tasks()["lfw"]
                other = skimage.data.coffee()
            else:
                if size == 224:
                    continue
                classes = tasks()["digits"]
                other = skimage.data.chelsea()
            root = work / f"geometry_{title.split()[0]}_{size}"
            write_folder(root, classes)
            rng = np.random.default_rng(1)
            files = [f"{name}/{i:04d}.png" for name, images in classes.items() for i in range(len(images))]
            planted = {}
            for original in rng.choice(files, min(10, len(files) // 4), replace=False):
                name, index = original.split("/")
                copy = f"{name}/{index[:-4]}_copy.jpg"
                (root / copy).write_bytes(copy_bytes(classes[name][int(index[:-4])]))
                planted[copy] = original
            first = next(iter(classes))
            (root / first / "other_kind.png").write_bytes(_png(other))
            for cut in ("last", "earlier"):
                x, data = cached_features(root, work / "runs", size, cut)
                where = {key: i for i, key in enumerate(data.keys)}
                copies = {frozenset((where[a], where[b])) for a, b in planted.items()}
                cells = []
                for standardise in (False, True):
                    pairs, _ = near_duplicates(x, standardise=standardise)
                    found = {frozenset(p) for p in pairs.tolist()}
                    involved = set(where[c] for c in planted) | {where[f"{first}/other_kind.png"]}
                    distinct = [p for p in found - copies if not p & involved]
                    cells.append(f"{len(found & copies):3d}/{len(copies)} {len(distinct):4d}")
                _, flags, _ = outliers(x, data.labels, data.num_classes)
                flagged = "yes" if flags[where[f"{first}/other_kind.png"]] else "NO"
                side = f" {crop_side(size)} px" if kind is None else ""
                print(f"{title + side:30} {size:4d} {cut:9} {cells[0]:>12} {cells[1]:>13} {flagged:>5} ({flags.sum()})",
                      flush=True)


# -- 4. the map -------------------------------------------------------------------------------

def neighbours_agree(points, labels, k: int = 5) -> float:
    from sklearn.neighbors import NearestNeighbors

    _, index = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    return float((labels[index[:, 1:]] == labels[:, None]).mean())


def map_methods(work: Path, image_size: int) -> None:
    from sklearn.manifold import TSNE

    from tl.findings import _unit, pca_map

    root = work / "digits"
    write_folder(root, tasks()["digits"])
    print(f"\n4. The map of the digit features ({image_size} px): seconds; share of each image's 5 nearest "
          "neighbours on the map in its class")
    for cut in ("last", "earlier"):
        x, data = cached_features(root, work / "runs", image_size, cut)
        started = time.perf_counter()
        points, _ = pca_map(x)
        pca_seconds = time.perf_counter() - started
        started = time.perf_counter()
        embedded = TSNE(n_components=2, init="pca", random_state=0).fit_transform(_unit(x))
        tsne_seconds = time.perf_counter() - started
        print(f"  {cut:8} PCA {pca_seconds:6.2f} s, agreement {neighbours_agree(points, data.labels):.3f}; "
              f"t-SNE {tsne_seconds:6.1f} s, agreement {neighbours_agree(embedded, data.labels):.3f}; "
              f"features themselves {neighbours_agree(_unit(x), data.labels):.3f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="speed,noise,geometry,map")
    parser.add_argument("--sizes", default="400,4000,40000")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one size, in a fresh process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one)))
        return
    parts = args.part.split(",")
    if "speed" in parts:
        speed([int(n) for n in args.sizes.split(",")])
    work = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        if "noise" in parts:
            noise(args.image_size, args.seeds, work)
        if "geometry" in parts:
            geometry(work)
        if "map" in parts:
            map_methods(work, args.image_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
