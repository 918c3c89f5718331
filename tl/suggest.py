"""Which unlabeled photos to add next: a pool ranked by how much each would teach a run.

:func:`rank` is a pure function of arrays (the caller computes them): each photo's
calibrated top probability, whether the run's "none of my classes" rule calls it unknown,
and its features in the space the run's head reads. A photo's *value* is how unsure the run
is of it (one minus its top probability, scaled so that a uniform guess is 1), plus
``UNKNOWN_BONUS`` when it looks like none of the classes (the run has seen nothing like it).
The ranking is greedy: each next photo is the one whose value, damped by how close it is to
the photos already ranked above it (cosine distance under ``SPREAD`` of the pool's typical
distance), is highest, so the top is not twenty near-copies of one unsure photo.

:func:`suggest` runs a :class:`tl.predict.Predictor` over ``(name, bytes or path)`` photos
(decoded as :mod:`tl.batch` decodes them, one backbone pass per batch of ``BATCH_SIZE``),
applies the run's rule at the strictness asked for, and ranks them. Plain Python and numpy;
TensorFlow only through the Predictor.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from tl.errors import UserError

BATCH_SIZE = 32
UNKNOWN_BONUS = 0.5  # added to the value of a photo the run's rule calls unknown
SPREAD = 0.5  # within this share of the pool's median cosine distance, a photo is damped as a near-copy
GREEDY_LIMIT = 500  # positions ranked greedily; the rest follow by their damped value
DEFAULT_TOP = 20


def values(confidence, num_classes: int, unknown=None) -> np.ndarray:
    """How much each photo would teach before spreading: ``(1 - top probability) / (1 - 1/k)``
    (0 for a certain answer, 1 for a uniform guess), plus ``UNKNOWN_BONUS`` when unknown."""
    confidence = np.asarray(confidence, dtype=np.float64)
    value = (1.0 - confidence) / max(1.0 - 1.0 / max(num_classes, 2), 1e-9)
    if unknown is not None:
        value = value + UNKNOWN_BONUS * np.asarray([bool(u) for u in unknown], dtype=np.float64)
    return np.clip(value, 0.0, None)


def _unit(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def typical_distance(unit_features, seed: int = 0, sample: int = 256) -> float:
    """The median cosine distance between photos of the pool (a sample of rows against all)."""
    n = len(unit_features)
    if n < 2:
        return 1.0
    rows = np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False)
    distances = 1.0 - unit_features[rows] @ unit_features.T
    others = distances[rows[:, None] != np.arange(n)[None, :]]  # not a photo against itself
    return float(max(np.median(others), 1e-6))


def rank(value, features, *, limit: int = GREEDY_LIMIT) -> np.ndarray:
    """Photo indices, best first: greedy on ``value`` damped near the photos already ranked.

    Args:
        value: ``(n,)`` what each photo would teach (:func:`values`).
        features: ``(n, dim)`` the photos in the run's feature space.
        limit: how many positions are chosen greedily; the others follow by damped value.

    Returns:
        ``(n,)`` int array, a permutation of ``range(n)``.
    """
    value = np.asarray(value, dtype=np.float64)
    n = len(value)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    x = _unit(features)
    radius = SPREAD * typical_distance(x)
    nearest = np.full(n, np.inf)  # cosine distance to the nearest photo ranked so far
    taken = np.zeros(n, dtype=bool)
    order = []
    for _ in range(min(n, limit)):
        damped = value * np.minimum(1.0, nearest / radius)
        damped[taken] = -np.inf
        # Ties (equal damped values) go to the higher undamped value, then the earlier photo.
        best = int(np.lexsort((np.arange(n), -value, -damped))[0])
        order.append(best)
        taken[best] = True
        nearest = np.minimum(nearest, 1.0 - x @ x[best])
    if len(order) < n:
        damped = value * np.minimum(1.0, nearest / radius)
        rest = np.flatnonzero(~taken)
        order += list(rest[np.lexsort((rest, -damped[rest]))])
    return np.asarray(order, dtype=np.int64)


@dataclass
class Suggestion:
    """One ranked photo: its name, place (1 = best), value, the run's guess and its calibrated
    confidence, whether the rule calls it unknown, and its novelty score."""

    file: str
    rank: int
    value: float
    guess: str
    confidence: float
    unknown: bool | None
    novelty: float | None

    def why(self) -> str:
        """A few words on why it ranks where it does."""
        if self.unknown:
            return "looks like none of the classes"
        return f"unsure: {self.confidence:.0%} {self.guess}"

    @classmethod
    def from_json(cls, record: dict) -> "Suggestion":
        """The suggestion :meth:`as_json` wrote."""
        return cls(str(record["file"]), int(record["rank"]), float(record["value"]), str(record["guess"]),
                   float(record["confidence"]), record.get("unknown"), record.get("novelty"))

    def as_json(self) -> dict:
        return {"file": self.file, "rank": self.rank, "value": round(self.value, 6), "guess": self.guess,
                "confidence": round(self.confidence, 6), "unknown": self.unknown,
                "novelty": None if self.novelty is None else round(self.novelty, 6), "why": self.why()}


@dataclass
class Ranking:
    """The pool ranked: ``suggestions`` best first (all of them, or the top asked for),
    ``unreadable`` ``(file, reason)`` pairs, how many photos the pool held and the seconds."""

    run_id: str
    suggestions: list
    total: int
    unreadable: list = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict:
        return {"run_id": self.run_id, "total": self.total, "ranked": len(self.suggestions),
                "unreadable": [{"file": name, "error": reason} for name, reason in self.unreadable],
                "seconds": round(self.seconds, 3), "suggestions": [s.as_json() for s in self.suggestions]}

    @classmethod
    def from_json(cls, record: dict) -> "Ranking":
        """The ranking :meth:`as_json` wrote (a pool ranked in the background reads it back)."""
        return cls(str(record["run_id"]), [Suggestion.from_json(s) for s in record["suggestions"]],
                   int(record["total"]), [(u["file"], u["error"]) for u in record.get("unreadable", [])],
                   float(record.get("seconds", 0.0)))


def pool_outputs(predictor, photos, *, pass_rate: float | None = None, on_progress=None,
                 should_stop=None) -> tuple:
    """The pool through the run's own path, as :func:`tl.batch.iter_batches` classifies a
    folder (decoding overlapped with the model, one backbone pass per batch): ``(names, top
    probabilities, top classes, pooled features (n, dim), unknown or None, novelty or None,
    unreadable (name, reason) pairs)`` of its readable photos.

    Raises:
        Cancelled: ``should_stop()`` returned true between two batches.
    """
    from tl.batch import iter_batches
    from tl.errors import Cancelled

    photos = list(photos)
    rows, done = [], 0
    for batch in iter_batches(predictor, photos, k=1, pass_rate=pass_rate, keep_features=True):
        rows.extend(batch)
        done += len(batch)
        if on_progress:
            on_progress(done, len(photos))
        if should_stop and done < len(photos) and should_stop():
            raise Cancelled("Ranking was stopped.")
    good = [row for row in rows if row.prediction is not None]
    unreadable = [(row.file, row.error) for row in rows if row.prediction is None]
    judged = predictor.rule is not None
    return ([row.file for row in good], np.array([row.confidence for row in good], dtype=np.float64),
            [row.label for row in good],
            np.stack([row.features for row in good]) if good else np.zeros((0, 0), np.float32),
            np.array([row.unknown for row in good], dtype=bool) if judged else None,
            np.array([row.novelty for row in good], dtype=np.float64) if judged else None, unreadable)


def suggest(predictor, photos, *, top: int | None = DEFAULT_TOP, pass_rate: float | None = None,
            on_progress=None, should_stop=None) -> Ranking:
    """Rank ``photos`` (``(name, bytes or path)`` pairs) for the run behind ``predictor``.

    Args:
        top: how many suggestions to keep (``None``: all), at least 1.
        pass_rate: the strictness of "none of my classes" (:meth:`tl.predict.Predictor.judge`).
        on_progress: called with ``(done, total)`` after each batch.
        should_stop: checked between batches; a :class:`tl.errors.Cancelled` when true.

    Raises:
        UserError: ``top`` below 1, or not one photo of the pool could be read.
    """
    if top is not None and (not isinstance(top, int) or top < 1):
        raise UserError(f"Expected `top` to be a whole number of at least 1. Received: top={top!r}.")
    started = time.perf_counter()
    names, confidence, guesses, features, unknown, novelty, unreadable = pool_outputs(
        predictor, photos, pass_rate=pass_rate, on_progress=on_progress, should_stop=should_stop)
    if not names:
        raise UserError(f"None of the {len(unreadable)} photos could be read, so there is nothing to rank.")
    value = values(confidence, len(predictor.class_names), unknown)
    order = rank(value, features)
    chosen = order if top is None else order[:top]
    suggestions = [Suggestion(names[i], place + 1, float(value[i]), guesses[i],
                              float(confidence[i]), None if unknown is None else bool(unknown[i]),
                              None if novelty is None else float(novelty[i]))
                   for place, i in enumerate(chosen)]
    return Ranking(predictor.run.id, suggestions, len(names) + len(unreadable), unreadable,
                   time.perf_counter() - started)
