"""Whether a run's confidences mean what they say after the temperature, and how often its
"none of my classes" rule says so of photos that are none of its classes (issue 29).

    python bench/calibration.py [--seeds 10] [--quick] [--tasks digits,lfw,photos,made] [--work DIR]

Every run is trained through the product's own path (``tl.training.prepare`` +
``tl.training.execute``) at the defaults (EfficientNet-Lite0 with its ImageNet weights from
pip, feature_extraction, 224 px), ``samples_per_class=0`` (every photo), one run per seed, on
folders of PNG files (``bench/check.py``'s loaders):

- digit scans 0-4 (scikit-learn's 8x8 scans; 5-9 are kept as outsiders);
- LFW faces vs not (scikit-image's ``lfw_subset``, 25x25 grey);
- photo crops: 128-px crops of scikit-image's photographs, a class per photo, at most 16 each
  (14 classes, 198 crops; 128 rather than 160 px so that the test split pools over 100 photos
  over 5 seeds; the validation split is still under 30, so the temperature is out-of-fold);
- a made-dataset-sized task: 12 scans of each of the digits 0-3, a fresh draw per seed (its
  validation split is 8 photos, so the temperature is fitted out of fold).

Two ways to get a photo's features, both printed: "as served", the app's own pass
(``tl.predict.Predictor``'s backbone pass on each decoded file, batched by image size: what
Classify and ``tl classify`` compute; the model resizes in float), and "cached", the features
the run itself cached while training (a folder's images are resized to 224 and rounded to
uint8 by the training pipeline first), which is what ``metrics.json`` scores. The frozen
backbone is the same in every run here, so each photo goes through each pass once; each
seed then applies its own saved head (the temperature folded into it) and its own rule.

1. Calibration, pooled over the seeds (a photo in several seeds' test splits counts once
   for each; 10 seeds by default, as 5 left the digit scans' verdict to chance): each run's
   test photos (its ``split.json``) scored
   by the saved model's head; the uncalibrated probabilities are
   ``tl.calibration.scale(calibrated, 1 / T)``, which undoes the folded temperature exactly.
   The cached rows are checked against the run's own ``metrics.json`` (printed). ECE and NLL
   before and after, the temperatures and where they were fitted; "after <= before" is
   judged only on tasks with test mistakes, and ECE <= 0.05 on the digit scans.
2. "None of my classes": outsiders of three kinds per task (held-out classes of the same
   kind, real photographs from another package than the in-class images, uniform RGB noise
   of 6 sizes), written as one folder: for the digit models 200 scans of 5-9, scikit-image's
   113 160-px photo crops and 120 noise images; for the photo-crop model 104 random 128-px
   crops of scikit-image pictures that are none of its classes (hubble_deep_field, clock,
   text, page), 120 random crops (96-320 px) of scikit-learn's two sample photos and the
   noise; for LFW (lfw_subset has no other class) the scikit-learn crops and the noise. Then
   each seed's rule (``novelty.npz``: ``rule.scores``
   and ``rule.unknown``, the app's rule) and its export rule (calibrated top probability
   below ``rule.confidence_threshold_at()``), beside the in-class test photos pooled over
   seeds (and, for the made-size task, every other scan of its 4 digits, which it never
   saw). The verdict is the app rule's as served: outsiders pooled with equal weight per
   kind, in-class photos pooled. The first seed of each task also classifies 5 in-class and
   5 outsider files through ``Predictor.predict`` itself and prints how far both ways are
   from it.
3. The seconds each task took (training, the feature passes and the measuring).

``--quick``: 2 seeds, 60 scans per digit and about a quarter of the outsiders (a smoke run,
about a minute). ``--work DIR`` keeps the images, runs and caches there (reused next time).
"""

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NOISE_SIZES = (8, 25, 64, 128, 224, 320)
TASK_NAMES = ("digits", "lfw", "photos", "made")


# -- images -------------------------------------------------------------------------------

def random_crops(picture, count: int, sides, rng) -> list:
    """``count`` crops of ``picture`` at random positions (they may overlap), each of a side
    drawn from ``sides`` (capped at the picture's)."""
    picture = np.asarray(picture)
    picture = picture[..., :3] if picture.ndim == 3 else picture
    h, w = picture.shape[:2]
    crops = []
    for _ in range(count):
        side = min(int(rng.choice(sides)), h, w)
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crops.append(np.ascontiguousarray(picture[y:y + side, x:x + side]))
    return crops


def outsider_images(scans: dict, quick: bool) -> dict:
    """kind folder -> list of uint8 images (see the module docstring)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    from check import photo_crops

    rng = np.random.default_rng(29)
    per_digit, scale = (10, 0.25) if quick else (40, 1.0)
    held_digits = [scans[str(d)][i] for d in range(5, 10)
                   for i in np.sort(rng.choice(len(scans[str(d)]), per_digit, replace=False))]
    skimage_160 = [c for crops in photo_crops(160).values() for c in crops]
    other = []
    for name, count in (("hubble_deep_field", 60), ("clock", 20), ("text", 12), ("page", 12)):
        other += random_crops(getattr(skimage.data, name)(), max(2, int(count * scale)), (128,), rng)
    sklearn = [c for picture in load_sample_images().images
               for c in random_crops(picture, max(5, int(60 * scale)), (96, 128, 160, 224, 320), rng)]
    noise = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in NOISE_SIZES
             for _ in range(max(3, int(20 * scale)))]
    return {"digits_5-9": held_digits, "skimage_crops_160": skimage_160 if not quick else skimage_160[:30],
            "skimage_other_128": other, "sklearn_crops": sklearn, "noise": noise}


KINDS = {  # folder -> what the tables call it
    "digits_5-9": "held-out classes: digit scans 5-9",
    "skimage_other_128": "held-out classes: other scikit-image pictures, 128-px crops",
    "skimage_crops_160": "photographs: scikit-image, 160-px crops",
    "sklearn_crops": "photographs: scikit-learn's 2 sample photos, crops 96-320 px",
    "noise": f"noise: uniform RGB, {len(NOISE_SIZES)} sizes {NOISE_SIZES[0]}-{NOISE_SIZES[-1]} px",
}


@dataclass
class Task:
    name: str
    title: str
    root: object  # seed -> in-class folder
    kinds: list  # outsider folders (KINDS keys); None: no such kind for this task, with why
    ece_target: float | None = None
    unseen: object = None  # seed -> keys of the digit folder's in-class scans the run never had
    missing: str = ""  # why a kind of outsider is absent


def make_tasks(work: Path, quick: bool, wanted) -> tuple:
    """(tasks, outsiders folder, digits folder)."""
    from check import photo_crops, tasks as check_tasks, write_folder

    images = check_tasks()
    scans = images["digits"]
    per_class = 60 if quick else None
    digits_root = work / "data" / "digits_0-4"
    write_folder(digits_root, {str(d): scans[str(d)][:per_class] for d in range(5)})
    outsiders = work / "data" / "outsiders"
    write_folder(outsiders, outsider_images(scans, quick))
    made_drawn = {}

    def made_root(seed):
        """12 scans of each of 0-3, a fresh draw per seed, named as in the digit folder."""
        root = work / "data" / f"made_seed{seed}"
        rng = np.random.default_rng([seed, 12])
        drawn = {}
        for d in range(4):
            available = len(scans[str(d)][:per_class])
            drawn[str(d)] = np.sort(rng.choice(available, 12, replace=False))
            (root / str(d)).mkdir(parents=True, exist_ok=True)
            for i in drawn[str(d)]:
                target = root / str(d) / f"{i:04d}.png"
                if not target.exists():
                    shutil.copyfile(digits_root / str(d) / f"{i:04d}.png", target)
        made_drawn[seed] = {f"{d}/{i:04d}.png" for d, rows in drawn.items() for i in rows}
        return root

    def made_unseen(seed):
        return [f"{d}/{i:04d}.png" for d in range(4) for i in range(len(scans[str(d)][:per_class]))
                if f"{d}/{i:04d}.png" not in made_drawn[seed]]

    lfw_root, photos_root = work / "data" / "lfw", work / "data" / "photo_crops"
    if "lfw" in wanted:
        write_folder(lfw_root, images["lfw"])
    if "photos" in wanted:
        write_folder(photos_root, photo_crops(128, per_photo=16))
    digit_kinds = ["digits_5-9", "skimage_crops_160", "noise"]
    found = {
        "digits": Task("digits", "digit scans 0-4", lambda seed: digits_root, digit_kinds, ece_target=0.05),
        "lfw": Task("lfw", "LFW faces vs not", lambda seed: lfw_root, ["sklearn_crops", "noise"],
                    missing="no held-out class: lfw_subset has only its two"),
        "photos": Task("photos", "photo crops, a class per photo", lambda seed: photos_root,
                       ["skimage_other_128", "sklearn_crops", "noise"]),
        "made": Task("made", "made-size: digits 0-3, 12 each", made_root, digit_kinds, unseen=made_unseen),
    }
    return [found[name] for name in TASK_NAMES if name in wanted], outsiders, digits_root


# -- the runs' own features and heads -------------------------------------------------------

def folder_features(root: Path, run, runs_dir: Path):
    """(pooled features of every image in folder ``root``, its Data, "hit"/"miss") through
    the run's own feature pass and the runs folder's cache (the key training uses)."""
    from tl import features
    from tl.backbones import cut_layer
    from tl.data.folder import folder_data
    from tl.models import feature_extractor
    from tl.paths import cache_root
    from tl.strategies import STRATEGIES
    from tl.weights import initial_weights

    cfg = run.config
    data = folder_data("folder", root, cfg.image_size, runs_dir)
    found = features.features_of(
        data, lambda: feature_extractor(run.load_model()), root=cache_root(runs_dir), backbone=cfg.backbone,
        weights=initial_weights(cfg, runs_dir)[1], cut=cut_layer(cfg.backbone, STRATEGIES[cfg.strategy].cut),
        image_size=cfg.image_size, batch_size=cfg.batch_size, emit=lambda *a, **k: None, engine=cfg.engine,
        precision=cfg.engine_precision)
    return found.store.read(np.arange(len(data))), data, found


def saved_head(run):
    """The saved model's head (the temperature folded in), reading pooled features."""
    from tl.heads import refresh_standardization

    head = run.load_model().get_layer("head")
    refresh_standardization(head)
    return head


def head_probs(head, x) -> np.ndarray:
    return np.concatenate([np.asarray(head(x[i:i + 4096][:, None, None, :], training=False), dtype=np.float64)
                           for i in range(0, len(x), 4096)])


class Served:
    """Pooled features as the app computes them: ``Predictor``'s own backbone pass on each
    decoded file (``decode_image`` as the Classify page and ``tl classify`` call it; the model
    resizes in float), batched by image size, kept by path. Valid across the runs here: each
    keeps EfficientNet-Lite0's ImageNet backbone frozen at 224 px, so every run's pass is the
    same (the cross-check compares ``Predictor.predict`` of each task's first run with it)."""

    def __init__(self):
        self.memo = {}

    def features(self, predictor, paths) -> np.ndarray:
        from tl.images import decode_image
        from tl.predict import DRAFT_SIZE

        groups = {}
        for path in dict.fromkeys(p for p in paths if p not in self.memo):
            image = decode_image(path, draft_size=DRAFT_SIZE)
            groups.setdefault(image.shape, []).append((path, image))
        route = predictor.transfer_path
        for items in groups.values():
            for i in range(0, len(items), 32):
                chunk = items[i:i + 32]
                out = route.runner(np.stack([image for _, image in chunk]).astype(np.float32))
                pooled = np.asarray(out if route.index is None else out[route.index], dtype=np.float32)
                pooled = pooled.mean(axis=(1, 2)) if pooled.ndim == 4 else pooled.reshape(len(chunk), -1)
                self.memo.update((path, row) for (path, _), row in zip(chunk, pooled))
        return np.stack([self.memo[p] for p in paths])


@dataclass
class Judged:
    """One set of photos judged by one run: novelty, calibrated confidence, the two rules."""

    novelty: np.ndarray
    confidence: np.ndarray
    far: np.ndarray  # novelty above the app rule's cut
    unsure: np.ndarray  # confidence under the app rule's floor
    app: np.ndarray
    export: np.ndarray


def judge(rule, head, x) -> Judged:
    scores = rule.scores(x)
    confidence = head_probs(head, x).max(axis=1)
    return Judged(scores, confidence, scores > rule.threshold_at(), confidence < rule.confidence_floor_at(),
                  rule.unknown(scores, confidence), confidence < rule.confidence_threshold_at())


PATHS = ("served", "cached")  # the app's pass on each file; the run's own cached features


@dataclass
class Pooled:
    """One path's figures of a task, a list entry per seed."""

    raw: list = field(default_factory=list)
    calibrated: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    judged: dict = field(default_factory=dict)  # row name -> list of Judged


@dataclass
class Result:
    """A task's figures, pooled over its seeds."""

    paths: dict = field(default_factory=lambda: {p: Pooled() for p in PATHS})
    per_seed: list = field(default_factory=list)
    cuts: list = field(default_factory=list)
    mismatch: float = 0.0  # largest |difference| from metrics.json's own figures
    cache: list = field(default_factory=list)
    crosscheck: str = ""
    seconds: float = 0.0


def measure(task: Task, seeds, runs_dir: Path, outsiders: Path, digits_root: Path, served: Served) -> Result:
    from tl import calibration, novelty, training
    from tl.config import RunConfig
    from tl.files import read_json
    from tl.predict import Predictor

    result = Result()
    started = time.perf_counter()
    predictor = None
    for seed in seeds:
        root = task.root(seed)
        cfg = RunConfig(dataset="folder", data_dir=str(root), seed=seed, samples_per_class=0)
        run = training.prepare(cfg, runs_dir)
        status = training.execute(run, runs_dir)
        if status["status"] != "done":
            raise SystemExit(f"{task.name} seed {seed}: the run ended {status['status']}: {status.get('reason')}")
        metrics, split = run.metrics, read_json(run.path / "split.json")
        record = metrics["calibration"]
        temperature = record["temperature"] or 1.0
        if predictor is None:  # the app's pass; the same frozen backbone serves every seed (see Served)
            predictor = Predictor(run, imagenet_weights=None)
        head = saved_head(run)
        rule = novelty.load(run.path / novelty.FILE)
        result.cuts.append((rule.threshold_at(), rule.confidence_floor_at(), rule.confidence_threshold_at()))

        # the photos: in-class test (and never-seen in-class) rows, and each kind of outsider
        x, data, found = folder_features(root, run, runs_dir)
        train_key = next(e["key"] for e in run.events()[0] if e["type"] == "features")
        result.cache.append(found.cache == "hit" and found.key == train_key)
        where = {key: i for i, key in enumerate(data.keys)}
        test = np.array([where[key] for key in split["test"]])
        labels = data.labels[test]
        sets = {"in-class test photos": (x[test], [root / key for key in split["test"]])}
        if task.unseen is not None:
            xd, dd, _ = folder_features(digits_root, run, runs_dir)
            at = {key: i for i, key in enumerate(dd.keys)}
            keys = task.unseen(seed)
            sets["in-class, never in its dataset"] = (xd[[at[k] for k in keys]], [digits_root / k for k in keys])
        xo, do, _ = folder_features(outsiders, run, runs_dir)
        for kind in task.kinds:
            members = np.flatnonzero(do.labels == do.class_names.index(kind))
            sets[kind] = (xo[members], [outsiders / do.keys[i] for i in members])

        for path in PATHS:
            pooled = result.paths[path]
            for name, (cached_x, files) in sets.items():
                features = cached_x if path == "cached" else served.features(predictor, files)
                judged = judge(rule, head, features)
                pooled.judged.setdefault(name, []).append(judged)
                if name == "in-class test photos":
                    calibrated = head_probs(head, features)
                    pooled.calibrated.append(calibrated)
                    pooled.raw.append(calibration.scale(calibrated, 1.0 / temperature))
                    pooled.labels.append(labels)
        mine = result.paths["cached"]
        raw, calibrated = mine.raw[-1], mine.calibrated[-1]
        ours = {"ece_before": calibration.ece(raw, labels), "ece_after": calibration.ece(calibrated, labels),
                "nll_before": calibration.nll(raw, labels), "nll_after": calibration.nll(calibrated, labels)}
        result.mismatch = max(result.mismatch, *(abs(ours[k] - record[k]) for k in ours))
        test_rate = metrics["novelty"].get("test_unknown_rate")
        if test_rate is not None:  # recorded to 4 decimals
            rate = mine.judged["in-class test photos"][-1].app.mean()
            result.mismatch = max(result.mismatch, abs(rate - test_rate) - 5e-5)
        served_cal = result.paths["served"].calibrated[-1]
        result.per_seed.append({"seed": seed, "temperature": record["temperature"], "source": record["source"],
                                "test": len(test), "val": metrics["val_size"], **ours,
                                "mistakes": int((calibrated.argmax(axis=1) != labels).sum()),
                                "served_mistakes": int((served_cal.argmax(axis=1) != labels).sum()),
                                "served_ece_after": calibration.ece(served_cal, labels)})
        if seed == seeds[0]:
            result.crosscheck = crosscheck(predictor, result, sets, task)
        del head
        gc.collect()
    del predictor
    gc.collect()
    result.seconds = time.perf_counter() - started
    return result


def crosscheck(predictor, result: Result, sets: dict, task: Task) -> str:
    """``Predictor.predict`` on 5 in-class test files and 5 outsiders of the first run,
    against the bench's served rows (should agree to rounding) and cached rows (differ by
    the training pipeline's resize to 224 and rounding to uint8)."""
    from tl.images import decode_image
    from tl.predict import DRAFT_SIZE

    cases = [("in-class test photos", i) for i in range(5)]
    cases += [(task.kinds[j % len(task.kinds)], j // len(task.kinds)) for j in range(5)]
    gaps = {p: [0, 0.0, 0.0] for p in PATHS}  # same unknown, largest novelty and confidence differences
    for name, i in cases:
        found = predictor.predict(decode_image(sets[name][1][i], draft_size=DRAFT_SIZE), 1)
        for path in PATHS:
            judged = result.paths[path].judged[name][0]
            gap = gaps[path]
            gap[0] += bool(found.unknown) == bool(judged.app[i])
            gap[1] = max(gap[1], abs(found.novelty - judged.novelty[i]))
            gap[2] = max(gap[2], abs(found.confidence - judged.confidence[i]))
    served, cached = gaps["served"], gaps["cached"]
    verdict = "agree" if served[0] == len(cases) and served[1] <= 1e-3 else "DISAGREE"
    return (f"Predictor.predict on {len(cases)} files (5 in-class test, 5 outsiders), first seed: against the "
            f"served rows same 'unknown' {served[0]}/{len(cases)}, |novelty difference| <= {served[1]:.1e}, "
            f"|confidence difference| <= {served[2]:.1e}: {verdict}; against the cached rows {cached[0]}/{len(cases)}, "
            f"{cached[1]:.1e}, {cached[2]:.1e}")


# -- tables ---------------------------------------------------------------------------------

def share(values) -> float:
    return float(np.mean(np.concatenate(values))) if values else float("nan")


PATH_TITLES = {"served": "as served", "cached": "cached (= metrics.json)"}


def calibration_table(tasks, results, seeds) -> None:
    from tl import calibration

    print(f"\n1. Calibration on the test splits, pooled over {len(seeds)} seeds (ECE: 15 equal-width bins; before = "
          "the head's own probabilities, after = the saved model's). 'as served': the app's pass on each file; "
          "'cached': the features training cached and metrics.json scores (each file resized to 224 and rounded to "
          "uint8 first)")
    print(f"{'task':32} {'features':23} {'seeds':>5} {'test':>5} {'mistakes':>8} {'ECE before':>10} {'ECE after':>9} "
          f"{'NLL before':>10} {'NLL after':>9} {'T min-max':>10} {'source':11} {'after <= before':24} ECE <= 0.05")
    for task in tasks:
        r = results[task.name]
        temps = [s["temperature"] for s in r.per_seed if s["temperature"] is not None]
        t_range = f"{min(temps):.2f}-{max(temps):.2f}" if temps else "-"
        sources = "/".join(sorted({s["source"] for s in r.per_seed}))
        for path in PATHS:
            p = r.paths[path]
            raw, cal, labels = np.concatenate(p.raw), np.concatenate(p.calibrated), np.concatenate(p.labels)
            mistakes = int((cal.argmax(axis=1) != labels).sum())
            e0, e1 = calibration.ece(raw, labels), calibration.ece(cal, labels)
            n0, n1 = calibration.nll(raw, labels), calibration.nll(cal, labels)
            if mistakes:
                verdict = f"ECE {'yes' if e1 <= e0 else 'NO'}, NLL {'yes' if n1 <= n0 else 'NO'}"
            else:
                verdict = "no mistakes: not judged"
            target = "-" if task.ece_target is None else f"{'yes' if e1 <= task.ece_target else 'NO'} ({e1:.3f})"
            print(f"{task.title if path == PATHS[0] else '':32} {PATH_TITLES[path]:23} {len(r.per_seed):5d} "
                  f"{len(labels):5d} {mistakes:8d} {e0:10.4f} {e1:9.4f} {n0:10.4f} {n1:9.4f} {t_range:>10} "
                  f"{sources:11} {verdict:24} {target}")
    print("\n   per seed (cached features, as metrics.json): temperature (source, validation photos), test photos, "
          "mistakes, ECE before -> after, NLL before -> after; as served: mistakes, ECE after")
    for task in tasks:
        r = results[task.name]
        cells = [f"s{s['seed']}: T {s['temperature'] if s['temperature'] is None else round(s['temperature'], 2)} "
                 f"({s['source']}, {s['val']}), {s['test']}, {s['mistakes']}, {s['ece_before']:.3f} -> "
                 f"{s['ece_after']:.3f}, {s['nll_before']:.3f} -> {s['nll_after']:.3f}; served {s['served_mistakes']}, "
                 f"{s['served_ece_after']:.3f}" for s in r.per_seed]
        print(f"   {task.title}:\n      " + "\n      ".join(cells))
    worst = max(results[t.name].mismatch for t in tasks)
    hits = all(all(results[t.name].cache) for t in tasks)
    print(f"   Consistency: largest |difference| of the cached rows from the runs' own metrics.json (ECE, NLL, test "
          f"unknown rate) {worst:.1e}; test features read from each run's own cache entry: {'yes' if hits else 'NO'}")


def unknown_table(tasks, results, seeds) -> None:
    print(f"\n2. 'None of my classes', pooled over {len(seeds)} seeds, at the default strictness (95% of held-out "
          "in-class photos pass): the share called unknown by the app's rule (novelty above its cut, or calibrated "
          "confidence under its floor; the two parts beside it) and by the export rule (calibrated confidence under "
          "its cut); as served, and on the cached features beside")
    for task in tasks:
        r = results[task.name]
        served, cached = r.paths["served"].judged, r.paths["cached"].judged
        print(f"\n   {task.title} ({len(r.per_seed)} seeds, {r.seconds:.0f} s)")
        print(f"   {'photos':62} {'judged':>6} {'app rule':>8} {'(far':>6} {'unsure)':>7} {'export':>6}   "
              f"{'cached: app':>11} {'export':>6}")
        for name, judged in served.items():
            n = sum(len(j.app) for j in judged)
            print(f"   {KINDS.get(name, name):62} {n:6d} {share([j.app for j in judged]):8.1%} "
                  f"{share([j.far for j in judged]):6.1%} {share([j.unsure for j in judged]):7.1%} "
                  f"{share([j.export for j in judged]):6.1%}   {share([j.app for j in cached[name]]):11.1%} "
                  f"{share([j.export for j in cached[name]]):6.1%}")
        if task.missing:
            print(f"   ({task.missing})")
        figures = {}
        for path, judged in (("served", served), ("cached", cached)):
            inside = [j for name, js in judged.items() if name not in KINDS for j in js]
            figures[path] = {rule: (float(np.mean([share([getattr(j, rule) for j in judged[k]]) for k in task.kinds])),
                                    share([getattr(j, rule) for j in inside])) for rule in ("app", "export")}
        (app_out, app_in), (export_out, export_in) = figures["served"]["app"], figures["served"]["export"]
        print(f"   {'outsiders, equal weight per kind':62} {'':6} {app_out:8.1%} {'':6} {'':7} {export_out:6.1%}   "
              f"{figures['cached']['app'][0]:11.1%} {figures['cached']['export'][0]:6.1%}")
        ok = app_out >= 0.80 and app_in <= 0.10
        print(f"   verdict, app rule as served: outsiders {app_out:.1%} unknown (target >= 80%: "
              f"{'yes' if app_out >= 0.80 else f'NO, {80 - 100 * app_out:.1f} points short'}), in-class "
              f"{app_in:.1%} (target <= 10%: {'yes' if app_in <= 0.10 else f'NO, {100 * app_in - 10:.1f} points over'})"
              f": {'met' if ok else 'NOT met'}. Export rule: outsiders {export_out:.1%}, in-class {export_in:.1%}. "
              f"Cached: app {figures['cached']['app'][0]:.1%} / {figures['cached']['app'][1]:.1%}")
        cuts = np.array(r.cuts)
        low, high = cuts.min(axis=0), cuts.max(axis=0)
        print(f"   cuts over the seeds: novelty {low[0]:.3f}-{high[0]:.3f}, confidence floor "
              f"{low[1]:.3f}-{high[1]:.3f}, export cut {low[2]:.3f}-{high[2]:.3f}")
        print(f"   {r.crosscheck}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="runs per task (at least 5 for the figures)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, fewer photos: a smoke run")
    parser.add_argument("--tasks", default=",".join(TASK_NAMES))
    parser.add_argument("--work", help="a folder to keep (and reuse) the images, runs and feature cache in")
    args = parser.parse_args(argv)
    seeds = list(range(2 if args.quick else args.seeds))
    wanted = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = set(wanted) - set(TASK_NAMES)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; choose from {','.join(TASK_NAMES)}")

    from tl.engine import choose, cpu_flags

    print(f"bench/calibration.py, {time.strftime('%Y-%m-%d %H:%M')}; CPU: {cpu_flags()}; "
          f"load average {os.getloadavg()[0]:.1f}; feature engine {choose().engine} {choose().precision}"
          f"{'; --quick' if args.quick else ''}", flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    started = time.perf_counter()
    try:
        tasks, outsiders, digits_root = make_tasks(work, args.quick, wanted)
        runs_dir = work / "runs"
        results, served = {}, Served()
        for task in tasks:
            results[task.name] = measure(task, seeds, runs_dir, outsiders, digits_root, served)
            print(f"   {task.title}: {len(seeds)} runs measured in {results[task.name].seconds:.0f} s", flush=True)
        calibration_table(tasks, results, seeds)
        unknown_table(tasks, results, seeds)
        print(f"\nTime: {', '.join(f'{t.title} {results[t.name].seconds:.0f} s' for t in tasks)}; "
              f"in all {time.perf_counter() - started:.0f} s (images written, every run, every measurement)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
