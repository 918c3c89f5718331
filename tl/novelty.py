""""None of my classes": whether a photo looks like a run's training photos at all.

A softmax head always answers with one of its classes, however foreign the photo. Each run
therefore keeps a bank of its training photos' pooled features (at most ``BANK_ROWS`` rows in
float16, a few MB whatever the dataset's size: a stratified sample), unit length, and scores
a photo by two distances to them, in the feature space the run's head reads (the backbone's
for the strategies that keep it, the final model's for the ones that change it): ``1 -`` the
cosine similarity of its nearest banked photo, and that distance over the nearest photo's own
distance to its nearest neighbour (a density ratio: a photo as far from a tight cluster of
textures as uniform noise is, is strange there even when it would be ordinary near a loose
cluster). Each is divided by its held-out median and their sum is the photo's novelty (a
photo a little strange on both counts is stranger than one odd on one: measured against
the larger of the two, the sum caught more look-alike outsiders and more noise at the same
in-class rate).

The app's rule combines it with the calibrated confidence: a photo is "none of my classes"
when it is far from every training photo, or when the head is less sure of it than almost
any held-out in-class photo. The held-out in-class photos the rule may miss, ``1 - pass
rate``, are shared between the two cuts: ``NOVELTY_SHARE`` (three quarters) for the distance,
the rest for the confidence, so about ``pass rate`` pass both. The distance gets the larger
share because it is the stronger of the two on look-alike outsiders (in ``bench/calibration.py``
at equal shares it caught 26.5% of the digits 5-9 a made-size model of 0-3 never saw, the
confidence 14.0%); with three quarters the made-size task reaches 80.4% of outsiders at 8.0% of
in-class photos, against 79.2% / 7.2% with halves, and the other tasks keep their targets.
The shares were chosen among a quarter, a half and three quarters on that bench. The held-out
photos are the validation split, plus each banked training photo scored against the others
(and its out-of-fold confidence) when that split is small. The held-out figures are kept as quantiles, so the strictness
can be changed when a photo is classified. (Measured in ``bench/calibration.py``: distance
alone misses most look-alike outsiders such as digits the run never saw; confidence alone
misses most photos and noise; together they catch more of both.)

A model file that outputs only probabilities cannot compute a distance, so exports carry a
confidence-only rule instead: "unknown" below the calibrated top probability that
``PASS_RATE`` of held-out in-class photos reach (:meth:`NoveltyRule.confidence_threshold_at`).
Plain numpy; the rule is saved as ``novelty.npz`` in the run folder.
"""

from dataclasses import dataclass

import numpy as np

FILE = "novelty.npz"
FORMAT = 1
BANK_ROWS = 1000  # 1000 x 1280 float16 = 2.5 MB for EfficientNet-Lite0
K = 1
PASS_RATE = 0.95  # of held-out in-class photos, at the default strictness
NOVELTY_SHARE = 0.75  # of the held-out photos the app rule may miss, the distance cut's share (the rest: confidence)
MIN_HELD_OUT = 30  # fewer validation photos than this: banked training photos are scored too (leave-one-out)
QUANTILES = 201  # held-out scores are kept as this many quantiles
STRICTNESS = {"relaxed": 0.99, "balanced": PASS_RATE, "strict": 0.90}  # name -> share of in-class photos that pass


def unit(features) -> np.ndarray:
    """Rows scaled to unit length (float32; a zero row stays zero)."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 4:  # a feature map: pooled as the head pools it
        x = x.mean(axis=(1, 2))
    x = x.reshape(len(x), -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _nearest(queries: np.ndarray, bank: np.ndarray, k: int, exclude_self: bool = False) -> tuple:
    """``(distance, index)`` per query: ``1 -`` the mean cosine similarity of its ``k`` nearest
    bank rows, and the nearest row (``exclude_self``: query ``i`` is bank row ``i``, left out)."""
    distance = np.empty(len(queries), dtype=np.float64)
    nearest = np.empty(len(queries), dtype=np.int64)
    bank = bank.astype(np.float32)
    for start in range(0, len(queries), 1024):
        sims = queries[start:start + 1024] @ bank.T
        if exclude_self:
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        kk = max(1, min(k, sims.shape[1] - (1 if exclude_self else 0)))
        order = np.argsort(-sims, axis=1)[:, :kk]
        distance[start:start + len(sims)] = 1.0 - np.take_along_axis(sims, order, axis=1).mean(axis=1)
        nearest[start:start + len(sims)] = order[:, 0]
    return distance, nearest


def _measures(queries: np.ndarray, bank: np.ndarray, local: np.ndarray, k: int, exclude_self: bool = False):
    """``(distance, density ratio)``: the distance to the nearest training photos, and that
    distance over the nearest photo's own distance to its nearest neighbour in the bank."""
    distance, nearest = _nearest(queries, bank, k, exclude_self)
    return distance, distance / np.maximum(local[nearest], 1e-6)


@dataclass
class NoveltyRule:
    """A run's rule for "none of my classes" (see the module docstring)."""

    bank: np.ndarray  # (m, d) float16 unit rows of training features
    held_out: np.ndarray  # quantiles of held-out in-class novelty scores, ascending
    held_out_confidence: np.ndarray  # quantiles of their calibrated top probabilities, ascending
    held_out_count: int
    scales: np.ndarray  # (2,) held-out medians of the distance and of the density ratio
    k: int = K
    pass_rate: float = PASS_RATE
    _local: np.ndarray | None = None

    @property
    def local(self) -> np.ndarray:
        """Each banked photo's distance to its nearest other banked photo."""
        if self._local is None:
            bank = self.bank.astype(np.float32)
            self._local = _nearest(bank, bank, 1, exclude_self=True)[0]
        return self._local

    def scores(self, features) -> np.ndarray:
        """Novelty of each row of pooled features (or feature maps): higher is stranger."""
        return self._combine(*_measures(unit(features), self.bank, self.local, self.k))

    def _combine(self, distance, ratio) -> np.ndarray:
        return distance / max(self.scales[0], 1e-9) + ratio / max(self.scales[1], 1e-9)

    def threshold_at(self, pass_rate: float | None = None) -> float:
        """The app rule's novelty cut: above it a photo is "none of my classes"."""
        missed = 1.0 - (self.pass_rate if pass_rate is None else pass_rate)
        return float(np.quantile(self.held_out, 1.0 - NOVELTY_SHARE * missed))

    def confidence_floor_at(self, pass_rate: float | None = None) -> float:
        """The app rule's confidence cut: below it a photo is "none of my classes"."""
        missed = 1.0 - (self.pass_rate if pass_rate is None else pass_rate)
        return float(np.quantile(self.held_out_confidence, (1.0 - NOVELTY_SHARE) * missed))

    def unknown(self, scores, confidence, pass_rate: float | None = None) -> np.ndarray:
        """The app's rule, per photo: its novelty ``scores`` above the cut, or its calibrated
        top probability (``confidence``) below the floor."""
        return ((np.asarray(scores) > self.threshold_at(pass_rate))
                | (np.asarray(confidence) < self.confidence_floor_at(pass_rate)))

    @property
    def threshold(self) -> float:
        return self.threshold_at()

    def confidence_threshold_at(self, pass_rate: float | None = None) -> float:
        """The export rule's cut: the calibrated top probability below which a photo is
        "unknown", letting ``pass_rate`` of held-out in-class photos through."""
        return float(np.quantile(self.held_out_confidence, 1.0 - (self.pass_rate if pass_rate is None else pass_rate)))

    @property
    def confidence_threshold(self) -> float:
        return self.confidence_threshold_at()

    def as_record(self) -> dict:
        """What ``metrics.json`` and an export's metadata say about the rule."""
        return {"rule": "nearest-neighbour distance in feature space, or low calibrated confidence", "k": self.k,
                "bank_rows": len(self.bank), "held_out": self.held_out_count, "pass_rate": self.pass_rate,
                "threshold": round(self.threshold, 6), "confidence_floor": round(self.confidence_floor_at(), 6),
                "export_rule": "calibrated top probability below the cut",
                "confidence_threshold": round(self.confidence_threshold, 6)}

    def save(self, path) -> None:
        with open(path, "wb") as out:
            np.savez(out, format=np.array(FORMAT), bank=self.bank.astype(np.float16), held_out=self.held_out,
                     held_out_confidence=self.held_out_confidence, held_out_count=np.array(self.held_out_count),
                     scales=self.scales, k=np.array(self.k), pass_rate=np.array(self.pass_rate))


def load(path) -> NoveltyRule:
    """The rule saved in ``path``. Raises ValueError (or OSError) when it cannot be read."""
    with np.load(path, allow_pickle=False) as saved:
        if int(saved["format"]) != FORMAT:
            raise ValueError(f"unknown format {int(saved['format'])}")
        return NoveltyRule(bank=saved["bank"], held_out=saved["held_out"],
                           held_out_confidence=saved["held_out_confidence"],
                           held_out_count=int(saved["held_out_count"]), scales=saved["scales"], k=int(saved["k"]),
                           pass_rate=float(saved["pass_rate"]))


def bank_rows(labels, limit: int = BANK_ROWS, seed: int = 0) -> np.ndarray:
    """Indices into ``labels`` of a stratified sample of at most ``limit`` rows (every class
    keeps rows in proportion, at least one each), sorted."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    share = limit / len(labels)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        take = max(1, int(round(len(rows) * share)))
        chosen.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(chosen)[:limit])


def fit(train_features, held_features, held_confidence, train_confidence=None, *, k: int = K,
        pass_rate: float = PASS_RATE) -> NoveltyRule:
    """The rule from a run's banked training features (already sampled, see :func:`bank_rows`)
    and its held-out in-class photos' features and calibrated top probabilities. With fewer
    than ``MIN_HELD_OUT`` held-out photos, each banked training photo is also scored against
    the others (and ``train_confidence``, out-of-fold where known, joins the confidences)."""
    bank = unit(train_features)
    if len(bank) < 2:
        raise ValueError("a novelty rule needs at least two training photos")
    local = _nearest(bank, bank, 1, exclude_self=True)[0]
    held = unit(held_features) if len(held_features) else np.zeros((0, bank.shape[1]), np.float32)
    measured = [_measures(held, bank, local, k)]
    confidence = [np.asarray(held_confidence, dtype=np.float64)]
    if len(held) < MIN_HELD_OUT:
        measured.append(_measures(bank, bank, local, k, exclude_self=True))
        if train_confidence is not None:
            confidence.append(np.asarray(train_confidence, dtype=np.float64))
    distance = np.concatenate([d for d, _ in measured])
    ratio = np.concatenate([r for _, r in measured])
    confidence = np.concatenate(confidence)
    scales = np.array([np.median(distance), np.median(ratio)], dtype=np.float64)
    levels = np.linspace(0, 1, QUANTILES)
    rule = NoveltyRule(bank=bank.astype(np.float16), held_out=np.zeros(QUANTILES),
                       held_out_confidence=np.quantile(confidence, levels) if len(confidence) else np.zeros(QUANTILES),
                       held_out_count=int(len(distance)), scales=scales, k=k, pass_rate=pass_rate)
    rule.held_out = np.quantile(rule._combine(distance, ratio), levels)
    return rule
