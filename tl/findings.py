"""The findings of a check, from features already at hand: out-of-fold probabilities, the
photos probably in the wrong class, the near-duplicates, the outliers, a label-quality figure
per class and a 2-D map.

Pure functions of arrays (a :class:`tl.features.FeatureStore` reads as one too) that need no
model, no run, no config and no dataset: :func:`folds_for`, :func:`fold_of`, :func:`out_of_fold`,
:func:`label_issues`, :func:`near_duplicates`, :func:`outliers`, :func:`pca_map`, and
:func:`analyse`, which runs them all and returns :class:`Findings`. :mod:`tl.check` gets the
features and turns the findings into a :class:`tl.check.CheckResult`; this module never
imports that one.

How, and why (the figures are ``bench/check.py``'s, in ``bench/README.md``):

- **Out-of-fold probabilities**: stratified 5-fold, seeded; each fold's head is the exact
  head fit of training (:func:`tl.head_fit.fit_softmax` on features standardised with the
  other folds' statistics), and it predicts the held-out fold, so every photo is judged by a
  head that never saw it. (Ranking by training loss is biased: that head fitted the labels.)
  A class of fewer than 5 items (3 or 4: :data:`MIN_PER_CLASS` is the least) means as many
  folds as it has items (:func:`folds_for`), so each fold still holds out at least one item
  of every class and trains on at least one: every class is in every fold's head.
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
from dataclasses import dataclass

import numpy as np

from tl.errors import Cancelled

FOLDS = 5
MIN_PER_CLASS = 3  # the fewest items of a class a check takes (as training: one each for train, val, test)
DUPLICATE_SIMILARITY = 0.95
OUTLIER_FENCE = 3.0
BLOCK_ROWS = 2048  # a tile of similarities is BLOCK_ROWS^2 float32: 16 MiB
MAX_PAIRS = 10_000  # the most similar pairs kept when a dataset has more (a folder of one photo copied)


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


def folds_for(labels) -> int:
    """How many folds to use for ``labels``: :data:`FOLDS`, or the number of items of the
    smallest class when that is fewer (at least 2). With no more folds than that class has
    items, :func:`fold_of` holds out at least one item of every class in each fold and
    leaves at least one of every class in its training part."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    counts = counts[counts > 0]
    return int(max(2, min(FOLDS, counts.min()))) if len(counts) else FOLDS


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
    if n < dim:  # fewer images than features (a run's test split): the SVD of the n x dim data is far cheaper
        x = np.concatenate([rows for _, rows in _blocks(features)]).astype(np.float64)  # unit rows, as below
        centred = x - x.mean(axis=0)
        _, singular, rows = np.linalg.svd(centred, full_matrices=False)
        variances = singular ** 2 / max(n, 1)
        axes = rows[:2].T.copy()
        if axes.shape[1] < 2:  # one image or one direction: a zero second axis
            axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
            variances = np.pad(variances, (0, 2 - len(variances)))
        axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] < 0, -1.0, 1.0)
        return (centred @ axes).astype(np.float32), variances[:2] / max(float(variances.sum()), 1e-12)
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


def analyse(features, labels, num_classes: int, *, seed: int = 0, folds: int | None = None, standardise: bool = False,
            on_event=None, should_stop=None) -> Findings:
    """Every part of the check on features already at hand (an array or a feature store):
    what :func:`tl.check.run_check` does once it has them, and what ``bench/check.py`` times.
    ``folds``: of the out-of-fold probabilities, by default :func:`folds_for` the labels.
    ``standardise``: near-duplicates on standardised features (the earlier cut's).
    Events and stopping as :func:`tl.check.run_check`'s."""
    emit, stop = _emitter(on_event), _stopper(should_stop)
    timings, started = {}, time.time()

    def on_fold(fold, folds, seconds, fit):
        emit("fold", fold=fold, folds=folds, seconds=round(seconds, 3), iterations=fit.iterations)

    folds = folds_for(labels) if folds is None else folds
    probs = out_of_fold(features, labels, num_classes, folds=folds, seed=seed, on_fold=on_fold, should_stop=stop)
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


def _emitter(on_event):
    def emit(event_type, **fields):
        if on_event is not None:
            on_event({"t": round(time.time(), 3), "type": event_type, **fields})

    return emit


def _stopper(should_stop):
    return (lambda: False) if should_stop is None else should_stop
