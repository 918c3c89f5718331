"""Check a dataset from its cached features: the photos probably in the wrong class, the
near-duplicates, the outliers, a label-quality figure per class and a 2-D map.

Plain data in, plain data out. The parts are pure functions of arrays (a
:class:`tl.features.FeatureStore` reads as one too) that need no model: :func:`fold_of`,
:func:`out_of_fold`, :func:`label_issues`, :func:`near_duplicates`, :func:`outliers` and
:func:`pca_map`. :func:`run_check` gets the features through the cache with the pass
training uses (:func:`tl.features.features_of`: a check after training on the same data,
backbone, cut and size extracts nothing, and the other way round) and returns a
:class:`CheckResult` that the CLI and the app render.

How, and why (the figures are ``bench/check.py``'s, in ``bench/README.md``):

- **Out-of-fold probabilities**: stratified 5-fold, seeded; each fold's head is the exact
  head fit of training (:func:`tl.head_fit.fit_softmax` on features standardised with the
  other folds' statistics), and it predicts the held-out fold, so every photo is judged by a
  head that never saw it. (Ranking by training loss is biased: that head fitted the labels.)
- **Suspects**, confident learning in spirit, written here in numpy: a threshold per class,
  the mean probability that class's own photos get for it; a photo is suspect when another
  class's probability reaches that class's threshold, and its likely class is the most
  probable such class. Every photo is ranked by its self-confidence (the probability of its
  given class, lowest first): on the digit scans with 10% of the labels flipped it put
  0.84-0.92 flipped ones in the first k, the normalised margin 0.73-0.84.
- **Label quality** of a class: the share of its photos that are not suspect.
- **Near-duplicates**: cosine similarity of L2-normalised features at or above
  :data:`DUPLICATE_SIMILARITY`, tile by tile. The last layer's features are compared as
  they are; the earlier cut's are standardised first (distinct photos scored 0.98-0.997
  against each other there as they are). A pair whose photos fall in different splits of
  the seeded train/val/test split (the one training makes for the same seed and fractions)
  leaks; one within a class wastes a photo.
- **Outliers**: a photo's distance to a class is the cosine distance to the class centroid
  in units of that class's median distance; a photo whose distance to the nearest class is
  beyond Tukey's far fence (:data:`OUTLIER_FENCE` interquartile ranges above the third
  quartile) is far from every class.
- **Map**: the first two principal components of the normalised features (PCA; t-SNE cost
  more than it showed, see ``bench/README.md``).

Memory: each fold's training rows are one in-memory matrix up to the head fit's 256 MiB
(beyond that it streams, :mod:`tl.head_fit`); everything else reads the cache in blocks of
:data:`BLOCK_ROWS` rows (near-duplicates: a tile of BLOCK_ROWS x BLOCK_ROWS similarities at a
time), so beyond the per-image results nothing grows with the number of images.
"""

import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from tl.errors import Cancelled, ConfigError, DataError

FOLDS = 5
CUTS = ("last", "earlier")
DUPLICATE_SIMILARITY = 0.95
OUTLIER_FENCE = 3.0
BLOCK_ROWS = 2048  # a tile of similarities is BLOCK_ROWS^2 float32: 16 MiB
MAX_PAIRS = 10_000  # the most similar pairs kept when a dataset has more (a folder of one photo copied)
RESULT_FORMAT = 1


# -- the pure parts ---------------------------------------------------------------------

def fold_of(labels, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) each item is held out in: each class's items in a seeded order,
    dealt round-robin, each class starting where the previous one stopped, so every class
    is spread evenly and the folds differ in size by at most one item."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 4])
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return fold


def out_of_fold(features, labels, num_classes: int, *, folds: int = FOLDS, seed: int = 0, on_fold=None,
                should_stop=None) -> np.ndarray:
    """``(n, num_classes)`` probabilities, each row from the head fitted on the other folds.

    Args:
        features: ``(n, dim)`` array or :class:`tl.features.FeatureStore`.
        on_fold: called after each fold as ``on_fold(fold, folds, seconds, fit)`` (1-based).
        should_stop: checked at every L-BFGS iteration; true raises :class:`Cancelled`.
    """
    from scipy.special import softmax

    from tl.head_fit import Matrix, fit_softmax

    labels = np.asarray(labels, dtype=np.int64)
    fold = fold_of(labels, folds, seed)
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)

    def iterated(iteration, loss):
        if should_stop is not None and should_stop():
            raise Cancelled()

    for k in range(folds):
        started = time.time()
        held, rest = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        train = Matrix(features, rest)
        mean, variance = train.own_statistics()
        train.use_statistics(mean, variance)
        fit = fit_softmax(train, labels[rest], num_classes, on_iteration=iterated)
        del train  # the held-out rows are read after the training rows are freed
        test = Matrix(features, held)
        test.use_statistics(mean, variance)
        for where, x in test.chunks():
            probs[held[where]] = softmax((x @ fit.kernel + fit.bias).astype(np.float64), axis=1)
        if on_fold is not None:
            on_fold(k + 1, folds, time.time() - started, fit)
    return probs


@dataclass
class LabelIssues:
    """What :func:`label_issues` finds.

    Attributes:
        thresholds: ``(classes,)`` mean probability of each class over its own items.
        likely: ``(n,)`` the likely class of each item.
        suspect: ``(n,)`` whether the likely class is not the given one.
        score: ``(n,)`` how suspicious, in [0, 1]: one minus the given class's probability.
        ranking: item indices, most suspicious first (ties in item order).
        quality: ``(classes,)`` share of each class's items that are not suspect.
    """

    thresholds: np.ndarray
    likely: np.ndarray
    suspect: np.ndarray
    score: np.ndarray
    ranking: np.ndarray
    quality: np.ndarray


def label_issues(labels, probs) -> LabelIssues:
    """Confident learning on out-of-fold probabilities (see the module docstring).

    Args:
        labels: ``(n,)`` given class of each item.
        probs: ``(n, classes)`` out-of-fold probabilities.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    rows = np.arange(n)
    given = probs[rows, labels]
    counts = np.bincount(labels, minlength=k)
    thresholds = np.bincount(labels, weights=given, minlength=k) / np.maximum(counts, 1)
    thresholds[counts == 0] = np.inf  # a class without items claims none
    others = probs >= thresholds
    others[rows, labels] = False
    suspect = others.any(axis=1)
    likely = np.where(suspect, np.where(others, probs, -1.0).argmax(axis=1), probs.argmax(axis=1))
    score = 1.0 - given
    ranking = np.argsort(-score, kind="stable")
    quality = 1.0 - np.bincount(labels[suspect], minlength=k) / np.maximum(counts, 1)
    return LabelIssues(thresholds, likely, suspect, score, ranking, quality)


def _rows(features, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of an array or a feature store, as a float32 copy."""
    if isinstance(features, np.ndarray):
        return np.array(features[start:stop], dtype=np.float32)
    return features.read(np.arange(start, stop))


def _unit(x: np.ndarray, scale=None) -> np.ndarray:
    """Rows scaled to length one (an all-zero row stays zero), after ``(x - mean) / std``
    when ``scale`` is ``(mean, std)``."""
    if scale is not None:
        x = (x - scale[0]) / scale[1]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _blocks(features, block: int = BLOCK_ROWS, scale=None):
    """``(start, unit rows)`` over all rows, ``block`` at a time."""
    for start in range(0, len(features), block):
        yield start, _unit(_rows(features, start, min(start + block, len(features))), scale)


def _scale(features, block: int = BLOCK_ROWS) -> tuple:
    """Per-feature mean and standard deviation (streamed, float64 sums; a constant feature
    gets 1)."""
    total, squares = np.zeros(features.shape[1]), np.zeros(features.shape[1])
    for start in range(0, len(features), block):
        x = _rows(features, start, min(start + block, len(features))).astype(np.float64)
        total += x.sum(axis=0)
        squares += np.square(x).sum(axis=0)
    mean = total / max(len(features), 1)
    std = np.sqrt(np.maximum(squares / max(len(features), 1) - mean ** 2, 0.0))
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def near_duplicates(features, threshold: float = DUPLICATE_SIMILARITY, *, standardise: bool = False,
                    block: int = BLOCK_ROWS, max_pairs: int = MAX_PAIRS) -> tuple:
    """Pairs of items whose features' cosine similarity is at least ``threshold``.

    With ``standardise``, each feature is first standardised with the items' own mean and
    standard deviation: activations of an earlier cut share a large common part that makes
    every pair look alike (0.98 and more, see ``bench/README.md``). Computed tile by tile
    (``block`` x ``block`` similarities at a time, each tile's rows read again), so memory
    does not grow with the number of items.

    Returns:
        ``(pairs, similarity)``: ``(m, 2)`` item indices ``i < j`` and their similarities,
        most similar first; at most ``max_pairs`` of them.
    """
    n = len(features)
    scale = _scale(features, block) if standardise else None
    found_pairs, found_sims = [np.zeros((0, 2), dtype=np.int64)], [np.zeros(0, dtype=np.float32)]
    kept = 0
    for a, left in _blocks(features, block, scale):
        for b in range(a, n, block):
            right = left if b == a else _unit(_rows(features, b, min(b + block, n)), scale)
            sims = left @ right.T
            i, j = np.nonzero(sims >= threshold)
            if b == a:
                keep = j > i
                i, j = i[keep], j[keep]
            found_pairs.append(np.stack([i + a, j + b], axis=1).astype(np.int64))
            found_sims.append(sims[i, j])
            kept += len(i)
            if kept > 2 * max_pairs:  # keep the most similar as we go: memory stays bounded
                pairs, similarity = _top(np.concatenate(found_pairs), np.concatenate(found_sims), max_pairs)
                found_pairs, found_sims, kept = [pairs], [similarity], len(similarity)
    return _top(np.concatenate(found_pairs), np.concatenate(found_sims), max_pairs)


def _top(pairs, similarity, count):
    """The ``count`` most similar pairs, most similar first (ties by item indices)."""
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -similarity))[:count]
    return pairs[order], similarity[order]


def outliers(features, labels, num_classes: int, *, fence: float = OUTLIER_FENCE) -> tuple:
    """Items far from every class. An item's distance to a class is the cosine distance of
    its normalised features to the class centroid (the mean of the class's normalised
    features) in units of the class's typical distance (the median over its own items), so
    that a varied class is not mistaken for a set of outliers; an item is an outlier when
    its distance to the nearest class is above ``Q3 + fence * (Q3 - Q1)`` of all items'
    (Tukey's fence: the distances are skewed to the right, so quartiles describe their
    bulk better than a standard deviation does).

    Returns:
        ``(distance (n,), flags (n,) bool, cut)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    present = np.flatnonzero(np.bincount(labels, minlength=num_classes) > 0)
    sums = np.zeros((num_classes, features.shape[1]))
    for start, x in _blocks(features):
        np.add.at(sums, labels[start:start + len(x)], x)
    centroids = _unit(sums[present]).astype(np.float32)
    column = np.searchsorted(present, labels)  # each item's own class among the present ones

    def distances():  # (start, cosine distances of a block of items to every centroid)
        for start, x in _blocks(features):
            yield start, 1.0 - x @ centroids.T

    own = np.empty(len(labels))
    for start, d in distances():
        own[start:start + len(d)] = d[np.arange(len(d)), column[start:start + len(d)]]
    typical = np.maximum([np.median(own[column == c]) for c in range(len(present))], 1e-6)
    distance = np.empty(len(labels))
    for start, d in distances():
        distance[start:start + len(d)] = (d / typical).min(axis=1)
    q1, q3 = np.percentile(distance, [25, 75])
    cut = float(q3 + fence * (q3 - q1))
    return distance, distance > cut, cut


def pca_map(features) -> tuple:
    """The first two principal components of the normalised features.

    Returns:
        ``(coordinates (n, 2) float32, explained variance ratio (2,))``; each axis's sign
        is fixed (its largest loading positive), so the same features give one picture.
    """
    dim, n = features.shape[1], len(features)
    total, products = np.zeros(dim), np.zeros((dim, dim))
    for _, x in _blocks(features):
        total += x.sum(axis=0, dtype=np.float64)
        products += x.T @ x  # float32 within a block, summed in float64
    mean = total / max(n, 1)
    values, vectors = np.linalg.eigh(products / max(n, 1) - np.outer(mean, mean))
    axes = vectors[:, ::-1][:, :2]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    coordinates = np.empty((n, 2), dtype=np.float32)
    for start, x in _blocks(features):
        coordinates[start:start + len(x)] = (x - mean) @ axes
    return coordinates, values[::-1][:2] / max(float(values.sum()), 1e-12)


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
        ``outliers`` as files, ``label_quality``, and the accuracy, counts and timings."""
        return {
            "dataset": self.dataset, "images": len(self.images), "accuracy": self.accuracy,
            "suspects": [{key: s[key] for key in ("file", "label", "likely", "score")}
                         for s in self.suspects[:top]],
            "duplicates": [[*d["files"], d["similarity"]] for d in self.duplicates],
            "outliers": [o["file"] for o in self.outliers],
            "label_quality": self.label_quality, "timings": self.timings,
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
        UserError: with one sentence (no such dataset, a class with fewer than FOLDS images,
            weights not installed...).
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
    _check_counts(data)
    if data.skipped:
        emit("log", message=datasets.skipped_message(data.skipped))
    if cfg.weights == "imagenet":
        check_installed_weights(cfg.backbone)
    layer = cut_layer(cfg.backbone, STRATEGIES[cfg.strategy].cut)
    weights, weights_id = initial_weights(cfg, runs_dir)
    emit("data", classes=data.num_classes, images=len(data), folds=FOLDS,
         **{split: len(rows) for split, rows in data.splits.items()})
    found = features_of(data, lambda: _extractor(cfg, data.num_classes, weights), root=cache_root(runs_dir),
                        backbone=cfg.backbone, weights=weights_id, cut=layer, image_size=cfg.image_size,
                        batch_size=cfg.batch_size, emit=emit, engine=cfg.engine, precision=cfg.engine_precision,
                        should_stop=stop)
    timings["features"] = round(time.time() - started - timings["data"], 3)
    findings = analyse(found.store, data.labels, data.num_classes, seed=cfg.seed, standardise=layer is not None,
                       on_event=on_event, should_stop=should_stop)
    timings.update(findings.timings, total=round(time.time() - started, 3))
    result = _result(cfg, data, found, layer, findings, timings)
    emit("done", seconds=timings["total"])
    return result


@dataclass
class Findings:
    """What :func:`analyse` finds, as arrays over the items (see the functions that make
    each part): ``probs`` (out-of-fold), ``issues`` (:class:`LabelIssues`), ``pairs`` and
    ``similarity`` (near-duplicates), ``distance``, ``outlier`` and ``outlier_cut``,
    ``coordinates`` and ``explained`` (the map), and the seconds each stage took."""

    probs: np.ndarray
    issues: LabelIssues
    pairs: np.ndarray
    similarity: np.ndarray
    distance: np.ndarray
    outlier: np.ndarray
    outlier_cut: float
    coordinates: np.ndarray
    explained: np.ndarray
    timings: dict


def analyse(features, labels, num_classes: int, *, seed: int = 0, standardise: bool = False, on_event=None,
            should_stop=None) -> Findings:
    """Every part of the check on features already at hand (an array or a feature store):
    what :func:`run_check` does once it has them, and what ``bench/check.py`` times.
    ``standardise``: near-duplicates on standardised features (the earlier cut's).
    Events and stopping as :func:`run_check`'s."""
    emit, stop = _emitter(on_event), _stopper(should_stop)
    timings, started = {}, time.time()

    def on_fold(fold, folds, seconds, fit):
        emit("fold", fold=fold, folds=folds, seconds=round(seconds, 3), iterations=fit.iterations)

    probs = out_of_fold(features, labels, num_classes, seed=seed, on_fold=on_fold, should_stop=stop)
    issues = label_issues(labels, probs)
    timings["folds"] = round(time.time() - started, 3)
    found = {}
    for stage, work in (("duplicates", lambda: near_duplicates(features, standardise=standardise)),
                        ("outliers", lambda: outliers(features, labels, num_classes)),
                        ("map", lambda: pca_map(features))):
        if stop():
            raise Cancelled()
        emit("stage", stage=stage)
        started = time.time()
        found[stage] = work()
        timings[stage] = round(time.time() - started, 3)
    return Findings(probs, issues, *found["duplicates"], *found["outliers"], *found["map"], timings)


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


def _emitter(on_event):
    def emit(event_type, **fields):
        if on_event is not None:
            on_event({"t": round(time.time(), 3), "type": event_type, **fields})

    return emit


def _stopper(should_stop):
    return (lambda: False) if should_stop is None else should_stop


def _check_counts(data) -> None:
    """One sentence when a class has too few images for FOLDS folds."""
    counts = np.bincount(data.labels, minlength=data.num_classes)
    for name, count in zip(data.class_names, counts):
        if count < FOLDS:
            raise DataError(f"Class '{name}' has only {count} image(s); the check needs at least {FOLDS} in each "
                            f"class (each image is judged by a head fitted on the other {FOLDS - 1} of {FOLDS} "
                            "parts), so add images or remove the class.")


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


def _result(cfg, data, found, layer, findings: Findings, timings) -> CheckResult:
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
                "layer": layer, "image_size": cfg.image_size, "seed": cfg.seed, "folds": FOLDS,
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
        skipped=[list(item) for item in data.skipped], created=round(time.time(), 3))
