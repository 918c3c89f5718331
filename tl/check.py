"""Check a dataset: the photos probably in the wrong class, the near-duplicates, the
outliers, a label-quality figure per class and a 2-D map.

This module owns the orchestration: :func:`check_config` makes the config,
:func:`run_check` gets the features through the cache with the pass training uses
(:func:`tl.features.features_of`: a check after training on the same data, backbone, cut
and size extracts nothing, and the other way round), has :func:`tl.findings.analyse` find
what there is to find (the pure parts, and how and why they work, are in
:mod:`tl.findings`) and returns a :class:`CheckResult` that the CLI and the app render.
"""

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from tl.errors import ConfigError, DataError
from tl.findings import (DUPLICATE_SIMILARITY, FOLDS, MIN_PER_CLASS, Findings, _emitter, _stopper, analyse,
                         folds_for)

CUTS = ("last", "earlier")
RESULT_FORMAT = 1


# -- the whole check -------------------------------------------------------------------

def check_config(cut: str = "last", **fields):
    """A :class:`tl.config.RunConfig` for a check: every image (``samples_per_class=0``)
    unless asked, the backbone cut at ``cut`` ("last", or "earlier": the cut the
    ``earlier_layer`` strategy uses); ``fields`` as a run's (dataset, data_dir, backbone,
    image_size, seed, val_fraction, test_fraction...).

    Raises:
        ConfigError: an unknown cut, a backbone without an earlier cut, or a bad field.
    """
    from tl.backbones import BACKBONES
    from tl.config import RunConfig

    if cut not in CUTS:
        raise ConfigError(f"Expected `cut` to be one of {list(CUTS)}. Received: cut={cut!r}.")
    backbone = BACKBONES.get(fields.get("backbone", RunConfig.backbone))
    if cut == "earlier" and backbone is not None and backbone.earlier_cut is None:
        raise ConfigError(f"Backbone '{backbone.name}' has no earlier layer to cut at; check with cut 'last' "
                          "or another backbone.")
    fields.setdefault("samples_per_class", 0)
    return RunConfig(strategy="earlier_layer" if cut == "earlier" else "feature_extraction", **fields)


@dataclass
class CheckResult:
    """A check, as plain data (:meth:`to_dict` is JSON; :meth:`from_dict` reads it back).

    Attributes:
        dataset: the dataset's name (``data:NAME`` for a made one); ``origin`` its id and
            version when made in the app, ``fingerprint`` what identifies the items.
        class_names: one name per class.
        settings: backbone, weights, cut ("last" or "earlier") and its layer, image_size,
            seed, folds, val_fraction, test_fraction, samples_per_class, engine and
            engine_precision, feature_cache ("hit" or "miss").
        images: one dict per image, in the dataset's order: ``file`` (path relative to the
            data folder; for a made dataset ``class/<hash>.<ext>``), ``label``, ``likely``,
            ``score`` (0..1, higher is more suspicious), ``rank`` (1 = most suspicious),
            ``split``, ``x`` and ``y`` (the map), ``suspect``, ``duplicate``, ``outlier``.
        suspects: the suspect images, most suspicious first: ``file``, ``label``,
            ``likely``, ``score``, ``rank``.
        duplicates: pairs, most similar first: ``files`` ``[a, b]``, ``similarity``,
            ``leakage`` (in different splits), ``same_class``, ``identical`` (same bytes).
        outliers: ``file``, ``label``, ``distance``, farthest first.
        label_quality: class -> share of its images not suspect (0..1).
        accuracy: out-of-fold accuracy against the given labels.
        thresholds: ``classes`` (class -> confidence threshold), ``duplicate_similarity``,
            ``outlier_distance``.
        map: ``method`` ("pca") and ``explained`` (variance ratio of each axis).
        timings: seconds of ``data`` (reading the dataset's list), ``features`` (the cache
            or the pass), ``folds``, ``duplicates``, ``outliers``, ``map`` and ``total``.
        skipped: ``[file, reason]`` for files the folder scan left out.
        note: one sentence when the check could tell less than usual (a class of fewer
            than FOLDS images: fewer folds, see :func:`fewer_folds_note`), else empty.
    """

    dataset: str
    class_names: list
    settings: dict
    images: list
    suspects: list
    duplicates: list
    outliers: list
    label_quality: dict
    accuracy: float
    thresholds: dict
    map: dict
    timings: dict
    fingerprint: str = ""
    origin: dict | None = None
    skipped: list = field(default_factory=list)
    created: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        return {"format": RESULT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, record: dict) -> "CheckResult":
        """Read :meth:`to_dict`'s output back (unknown keys are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})

    def summary(self, top: int | None = None) -> dict:
        """What ``tl check --json`` prints: ``suspects`` (``file``, ``label``, ``likely``,
        ``score``; the first ``top``), ``duplicates`` as ``[file, file, similarity]``,
        ``outliers`` as files, ``label_quality``, the accuracy, counts and timings, and
        ``note`` (empty, or what the check could tell less about)."""
        return {
            "dataset": self.dataset, "images": len(self.images), "accuracy": self.accuracy,
            "suspects": [{key: s[key] for key in ("file", "label", "likely", "score")}
                         for s in self.suspects[:top]],
            "duplicates": [[*d["files"], d["similarity"]] for d in self.duplicates],
            "outliers": [o["file"] for o in self.outliers],
            "label_quality": self.label_quality, "timings": self.timings, "note": self.note,
        }


def run_check(cfg, runs_dir=None, *, on_event=None, should_stop=None) -> CheckResult:
    """Check the dataset ``cfg`` names (see the module docstring).

    ``cfg`` is a :class:`tl.config.RunConfig` (:func:`check_config` makes one): its dataset,
    per-class cap (``samples_per_class``; 0 checks every image), backbone, weights, image
    size, engine, seed and split fractions; the cut is its strategy's (``earlier_layer``:
    the earlier cut; any other: the last layer).

    Args:
        on_event: called with each progress event, a dict with ``t`` and ``type``:
            ``data`` (classes, images, folds, train/val/test), ``log`` (message), the
            feature pass's ``features`` events (as training's), ``fold`` (fold, folds,
            seconds) after each fold, ``stage`` (stage: duplicates, outliers, map) as each
            starts, ``done`` (seconds).
        should_stop: polled during the pass and the fits; true stops the check with
            :class:`tl.errors.Cancelled`.

    Raises:
        UserError: with one sentence (no such dataset, one class, a class with fewer than
            MIN_PER_CLASS images, weights not installed...). A class of MIN_PER_CLASS up to
            FOLDS - 1 images is checked with fewer folds, and the result's ``note`` says so.
        Cancelled: ``should_stop`` said so.
    """
    from tl import datasets
    from tl.backbones import check_installed_weights, cut_layer
    from tl.features import features_of
    from tl.paths import cache_root
    from tl.strategies import STRATEGIES
    from tl.weights import initial_weights

    started = time.time()
    emit = _emitter(on_event)
    stop = _stopper(should_stop)
    cfg = cfg.replace(strategy="earlier_layer" if STRATEGIES[cfg.strategy].cut == "earlier" else "feature_extraction")
    data = datasets.load(cfg, runs_dir)
    timings = {"data": round(time.time() - started, 3)}
    folds = _check_counts(data)
    if data.skipped:
        emit("log", message=datasets.skipped_message(data.skipped))
    if cfg.weights == "imagenet":
        check_installed_weights(cfg.backbone)
    layer = cut_layer(cfg.backbone, STRATEGIES[cfg.strategy].cut)
    weights, weights_id = initial_weights(cfg, runs_dir)
    emit("data", classes=data.num_classes, images=len(data), folds=folds,
         **{split: len(rows) for split, rows in data.splits.items()})
    found = features_of(data, lambda: _extractor(cfg, data.num_classes, weights), root=cache_root(runs_dir),
                        backbone=cfg.backbone, weights=weights_id, cut=layer, image_size=cfg.image_size,
                        batch_size=cfg.batch_size, emit=emit, engine=cfg.engine, precision=cfg.engine_precision,
                        should_stop=stop)
    timings["features"] = round(time.time() - started - timings["data"], 3)
    findings = analyse(found.store, data.labels, data.num_classes, seed=cfg.seed, folds=folds,
                       standardise=layer is not None,
                       on_event=on_event, should_stop=should_stop)
    timings.update(findings.timings, total=round(time.time() - started, 3))
    result = _result(cfg, data, found, layer, findings, timings, folds)
    emit("done", seconds=timings["total"])
    return result


def describe_event(event: dict) -> str:
    """One line of progress for an event of :func:`run_check` ('' for none)."""
    kind = event["type"]
    if kind == "data":
        return (f"Data: {event['classes']} classes, {event['images']} images; each judged by a head fitted on the "
                f"other {event['folds'] - 1} of {event['folds']} parts")
    if kind == "log":
        return event["message"]
    if kind == "features":
        if event["cache"] == "hit":
            return f"Features: reused from the cache ({event['images']} images)"
        if event["cache"] == "stored":
            return f"Features: extracted {event['images']} images in {event['seconds']:.1f} s ({event['engine']})"
        return f"Features: {event['done']}/{event['images']} images"
    if kind == "fold":
        return f"Fold {event['fold']}/{event['folds']}: head fitted and held-out part predicted in {event['seconds']:.1f} s"
    if kind == "stage":
        return {"duplicates": "Looking for near-duplicates", "outliers": "Looking for outliers",
                "map": "Drawing the map"}[event["stage"]]
    return ""


def _check_counts(data) -> int:
    """The folds to check ``data`` with (:func:`tl.findings.folds_for`); one sentence when
    it has one class, or a class with fewer than MIN_PER_CLASS images."""
    if data.num_classes < 2:
        raise DataError("The check needs at least two classes (each image is judged against the others), so add "
                        "a class.")
    counts = np.bincount(data.labels, minlength=data.num_classes)
    for name, count in zip(data.class_names, counts):
        if count < MIN_PER_CLASS:
            raise DataError(f"Class '{name}' has only {count} image(s); the check needs at least {MIN_PER_CLASS} in "
                            "each class (each image is judged by a head fitted on the others, which must hold every "
                            "class), so add images or remove the class.")
    return folds_for(data.labels)


def fewer_folds_note(smallest: int, folds: int) -> str:
    """The sentence a check with fewer than FOLDS folds carries ('' with FOLDS): what it
    can tell is less, each head fitted on fewer images and each class's threshold a mean
    over fewer of them."""
    if folds >= FOLDS:
        return ""
    return (f"With {smallest} images in the smallest class, the label checks use {folds} folds instead of {FOLDS} "
            f"and say less than with {FOLDS} or more images per class.")


def _extractor(cfg, num_classes, weights):
    """The feature model of ``cfg``'s backbone, cut and size, started from ``weights``
    (as :func:`tl.weights.initial_weights` gives them), as training builds it."""
    import keras

    from tl import runs
    from tl.models import build, feature_extractor
    from tl.weights import transfer_backbone

    keras.utils.set_random_seed(cfg.seed)  # random weights are the seed's, as in training
    source = weights if isinstance(weights, runs.Run) else None
    model = build(cfg, num_classes, weights=None if source else weights)
    if source is not None:
        transfer_backbone(source, model.get_layer("backbone"))
    return feature_extractor(model)


def _result(cfg, data, found, layer, findings: Findings, timings, folds: int) -> CheckResult:
    names = data.class_names
    split_of = np.empty(len(data), dtype=object)
    for split, rows in data.splits.items():
        split_of[rows] = split
    labels, issues, pairs, distance, outlier = (data.labels, findings.issues, findings.pairs, findings.distance,
                                                findings.outlier)
    coordinates = findings.coordinates
    rank = np.empty(len(data), dtype=np.int64)
    rank[issues.ranking] = np.arange(1, len(data) + 1)
    duplicated = np.zeros(len(data), dtype=bool)
    duplicated[pairs.ravel()] = True
    hashes = data.content_hashes
    images = [{"file": data.keys[i], "label": names[labels[i]], "likely": names[issues.likely[i]],
               "score": round(float(issues.score[i]), 4), "rank": int(rank[i]), "split": split_of[i],
               "x": round(float(coordinates[i, 0]), 4), "y": round(float(coordinates[i, 1]), 4),
               "suspect": bool(issues.suspect[i]), "duplicate": bool(duplicated[i]), "outlier": bool(outlier[i])}
              for i in range(len(data))]
    suspects = [{key: images[i][key] for key in ("file", "label", "likely", "score", "rank")}
                for i in issues.ranking if issues.suspect[i]]
    pair_records = [{"files": [data.keys[i], data.keys[j]], "similarity": round(float(s), 4),
                     "leakage": bool(split_of[i] != split_of[j]), "same_class": bool(labels[i] == labels[j]),
                     "identical": bool(hashes is not None and hashes[i] == hashes[j])}
                    for (i, j), s in zip(pairs.tolist(), findings.similarity)]
    far_records = [{"file": data.keys[i], "label": names[labels[i]], "distance": round(float(distance[i]), 4)}
                   for i in np.flatnonzero(outlier)[np.argsort(-distance[outlier], kind="stable")]]
    settings = {"backbone": cfg.backbone, "weights": cfg.weights, "cut": "earlier" if layer else "last",
                "layer": layer, "image_size": cfg.image_size, "seed": cfg.seed, "folds": folds,
                "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction,
                "samples_per_class": cfg.samples_per_class, "feature_cache": found.cache,
                **found.choice.as_record()}
    return CheckResult(
        dataset=data.name, class_names=list(names), settings=settings, images=images, suspects=suspects,
        duplicates=pair_records, outliers=far_records,
        label_quality={name: round(float(q), 4) for name, q in zip(names, issues.quality)},
        accuracy=round(float((findings.probs.argmax(axis=1) == labels).mean()), 4),
        thresholds={"classes": {name: round(float(t), 4) for name, t in zip(names, issues.thresholds)},
                    "duplicate_similarity": DUPLICATE_SIMILARITY,
                    "outlier_distance": round(findings.outlier_cut, 4)},
        map={"method": "pca", "explained": [round(float(e), 4) for e in findings.explained]},
        timings=timings, fingerprint=data.fingerprint,
        origin={k: v for k, v in data.origin.items() if k != "path"} if data.origin else None,
        skipped=[list(item) for item in data.skipped], created=round(time.time(), 3),
        note=fewer_folds_note(int(np.bincount(labels, minlength=len(names)).min()), folds))
