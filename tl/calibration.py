"""How far a run's probabilities can be trusted, and the one scalar that fixes most of it.

A head fitted to convergence on separable features (the exact L-BFGS fit) is sharp by design:
its top probability is near 1 even on its mistakes. Temperature scaling divides the logits by
one number ``T`` fitted on held-out predictions (minimising their negative log-likelihood), so
a confidence of 0.8 comes to mean right about 8 times in 10; the ranking, and so the accuracy,
never changes. :func:`fold_temperature` puts ``T`` into the final softmax layer's kernel and
bias, so the saved model (and every export of it) gives the calibrated probabilities with no
extra layer.

The figures: negative log-likelihood (:func:`nll`), expected calibration error over
``ECE_BINS`` equal-width confidence bins (:func:`ece`), and the bins themselves for a
reliability picture (:func:`reliability`). Plain numpy.
"""

import math

import numpy as np

ECE_BINS = 15
RELIABILITY_BINS = 10
MIN_HELD_OUT = 30  # held-out predictions needed to fit a temperature on the validation split alone
T_LOW, T_HIGH = 0.05, 100.0  # the search range of the temperature
EPS = 1e-12
PRIOR_SD = 0.5  # of log T, when the held-out photos hold mistakes (see fit_temperature)
MIN_GAIN = 0.02  # the cross-fitted NLL a temperature must save, as a share, to be applied (choose_temperature)


def _labels(probs, labels) -> tuple:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"Expected (n, classes) probabilities and n labels. Received: {probs.shape}, {labels.shape}.")
    return probs, labels


def scale(probs, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)``: what the model gives once ``T`` is folded in."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or probs.size == 0:
        return probs
    return scale_logits(np.log(np.clip(probs, EPS, 1.0)), temperature)


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the true class (``nan`` for no rows)."""
    probs, labels = _labels(probs, labels)
    if not len(labels):
        return float("nan")
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))))


def reliability(probs, labels, bins: int = RELIABILITY_BINS) -> list:
    """Per confidence bin (equal width over [0, 1]): ``{"low", "high", "count",
    "confidence" (mean top probability), "accuracy"}``; empty bins are left out."""
    probs, labels = _labels(probs, labels)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == labels if len(probs) else np.zeros(0, dtype=bool)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return rows


def ece(probs, labels, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and
    accuracy over ``bins`` equal-width bins (``nan`` for no rows)."""
    probs, labels = _labels(probs, labels)
    if not len(labels):
        return float("nan")
    return float(sum(row["count"] * abs(row["confidence"] - row["accuracy"])
                     for row in reliability(probs, labels, bins)) / len(labels))


def fit_temperature(probs, labels, low: float = T_LOW, high: float = T_HIGH) -> float:
    """The temperature in ``[low, high]`` that best explains the held-out ``probs`` (golden-
    section search on ``log T``).

    With mistakes among them: the maximum of their likelihood times a prior that keeps ``log T``
    near 0 (a normal of standard deviation ``PRIOR_SD``): a hundred held-out photos with three
    mistakes say little about the temperature, and the prior keeps that noise out of it.
    With none: the cross-entropy against targets smoothed by ``1 / (n + 2)`` (Laplace's rule of
    succession: ``n`` photos without a mistake say the error rate is about ``1 / (n + 2)``, not
    0), since otherwise every answer, a stranger's included, would become a certainty.
    """
    probs, labels = _labels(probs, labels)
    n, k = probs.shape
    if not n or k < 2:
        return 1.0
    logits = np.log(np.clip(probs, EPS, 1.0))
    mistakes = int(np.sum(probs.argmax(axis=1) != labels))
    smoothing = 0.0 if mistakes else 1.0 / (n + 2)
    targets = np.full((n, k), smoothing / (k - 1))
    targets[np.arange(n), labels] = 1.0 - smoothing
    prior = 0.0 if not mistakes else 1.0 / (2 * PRIOR_SD ** 2)

    def loss(log_t):
        scaled = np.clip(scale_logits(logits, math.exp(log_t)), EPS, 1.0)
        return float(-np.sum(targets * np.log(scaled)) + prior * log_t ** 2)

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(80):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return float(math.exp((a + b) / 2))


def choose_temperature(probs, labels, seed: int = 0) -> float:
    """:func:`fit_temperature` on all the held-out photos, kept only if it also helps on
    photos it was not fitted on: each half's temperature must lower the other half's NLL
    (summed over the two halves) by ``MIN_GAIN`` of what the head's own probabilities give; else 1.
    A head that is already calibrated (digit scans: ECE 0.01) then stays as it is, instead of
    taking a temperature the noise of a hundred photos made up. Without a mistake among them
    the Laplace temperature of :func:`fit_temperature` applies as it is (no half could say
    more)."""
    probs, labels = _labels(probs, labels)
    mistakes = int(np.sum(probs.argmax(axis=1) != labels)) if len(labels) else 0
    if len(labels) < 4 or not mistakes:
        return fit_temperature(probs, labels)
    order = np.random.default_rng([seed, 31]).permutation(len(labels))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    with_t = without = 0.0
    for fit_on, judge_on in (halves, halves[::-1]):
        t = fit_temperature(probs[fit_on], labels[fit_on])
        with_t += nll(scale(probs[judge_on], t), labels[judge_on]) * len(judge_on)
        without += nll(probs[judge_on], labels[judge_on]) * len(judge_on)
    return fit_temperature(probs, labels) if with_t < (1 - MIN_GAIN) * without else 1.0


def scale_logits(logits, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    out = np.exp(z)
    return out / out.sum(axis=1, keepdims=True)


def fold_temperature(dense, temperature: float) -> None:
    """Divide a softmax ``Dense`` layer's kernel and bias by ``temperature`` in place: the
    layer then outputs the calibrated probabilities."""
    if temperature == 1.0:
        return
    kernel, *bias = dense.get_weights()
    dense.set_weights([kernel / temperature, *(b / temperature for b in bias)])


def summary(before, after, labels, temperature: float | None, source: str, note: str | None = None) -> dict:
    """What ``metrics.json`` records under ``calibration``: the temperature (already applied
    to the saved model), where it was fitted, and the test split's figures before and after."""
    record = {"temperature": None if temperature is None else round(float(temperature), 6),
              "applied": temperature is not None, "source": source,
              "ece_before": _round(ece(before, labels)), "ece_after": _round(ece(after, labels)),
              "nll_before": _round(nll(before, labels)), "nll_after": _round(nll(after, labels)),
              "reliability_before": reliability(before, labels), "reliability_after": reliability(after, labels)}
    if note:
        record["note"] = note
    return record


def _round(value: float):
    return None if value != value else round(value, 6)
