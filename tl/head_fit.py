"""Fit a linear softmax head exactly on cached features.

A head that is linear at inference (``linear``: pooling then softmax; ``gap_dropout_dense``:
the same with dropout, which is the identity at inference) on frozen features is a
multinomial logistic regression. Rather than nudging it with a few hundred small Adam
steps, :func:`fit_softmax` minimises the L2-regularised cross-entropy to convergence with
L-BFGS, the objective scikit-learn's ``LogisticRegression`` minimises::

    (1 / n) * sum_i w_i * CE(softmax(x_i W + b), y_i) + ||W||^2 / (2 C n)

on standardised features (C = 1 by default; the bias is not penalised). Each L-BFGS
iteration reads every training row at least once; a few of them, from the first to the last,
are reported as the exact fit's "epochs" (see :class:`_Reporter`), each with both the
training cross-entropy (``loss``) and this objective (``objective``): L-BFGS only ever lowers
the objective, while the cross-entropy alone can rise from one report to the next as the
penalty trades it for smaller weights.

Features that fit in :data:`IN_MEMORY_BYTES` (256 MiB) are read into one matrix; beyond that every
function evaluation streams them in chunks of :data:`CHUNK_ROWS` rows from the memory-mapped
cache, so memory stays flat in the number of images (the price: one read of the file per
evaluation).
"""

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np

CHUNK_ROWS = 8192
# 256 MiB: about 52,000 rows of 1280 float32 features. In memory the peak is about twice the
# matrix (the copy and the mapped file pages); streamed it stays flat (bench/feature_cache.py:
# 200,000 rows in 7.9 s at 236 MiB peak, against 7.2 s at 1,987 MiB in memory).
IN_MEMORY_BYTES = 256 * 1024 ** 2
MAX_ITERATIONS = 500
TOLERANCE = 1e-5  # on the largest gradient component (scipy's gtol)
REPORT_GROWTH = 2 ** 0.5  # see _Reporter
REPORT_SECONDS = 1.0
SINGLE_THREAD_ELEMENTS = 2 ** 24  # 64 MiB of float32 features: about 13,000 rows of 1280 (see _blas_threads)


@dataclass
class Matrix:
    """Training rows of a :class:`tl.features.FeatureStore` (or an in-memory array), read
    as one matrix when small enough, else in chunks; standardised on the way out once
    :attr:`mean` and :attr:`variance` are set."""

    source: object  # FeatureStore, or a 2-D numpy array
    rows: np.ndarray
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None
    _cached: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64)
        if self.in_memory:
            self._cached = self._read(self.rows)

    @property
    def dim(self) -> int:
        return int(self.source.shape[1])

    @property
    def in_memory(self) -> bool:
        return len(self.rows) * self.dim * 4 <= IN_MEMORY_BYTES

    def _read(self, rows) -> np.ndarray:
        if isinstance(self.source, np.ndarray):
            return np.asarray(self.source[rows], dtype=np.float32)
        return self.source.read(rows)

    def chunks(self):
        """``(slice of positions in rows, standardised float32 chunk)`` covering every row."""
        size = max(len(self.rows), 1) if self._cached is not None else CHUNK_ROWS
        for start in range(0, len(self.rows), size):
            stop = min(start + size, len(self.rows))
            if self._cached is not None:  # standardised in place already
                yield slice(start, stop), self._cached[start:stop]
            else:
                yield slice(start, stop), self._standardise(self._read(self.rows[start:stop]))

    def _standardise(self, x):
        if self.mean is None:
            return x
        x -= self.mean
        x /= np.sqrt(self.variance)
        return x

    def use_statistics(self, mean, variance) -> None:
        """Standardise with ``mean`` and ``variance`` (the training rows')."""
        self.mean, self.variance = np.asarray(mean, np.float32), np.asarray(variance, np.float32)
        if self._cached is not None:
            self._standardise(self._cached)

    def own_statistics(self) -> tuple:
        """Per-feature mean and variance of these rows (streamed, float64 sums), before any
        standardisation. A variance under 1e-4 of the mean variance is raised to that floor,
        so a feature that is (almost) constant in training cannot blow up at test time."""
        if self.mean is not None:
            raise ValueError("statistics of a matrix that is standardised already")
        total, squares, count = np.zeros(self.dim), np.zeros(self.dim), 0
        for _, chunk in self.chunks():
            for start in range(0, len(chunk), CHUNK_ROWS):  # float64 temporaries of one chunk at most
                part = chunk[start:start + CHUNK_ROWS].astype(np.float64)
                total += part.sum(axis=0)
                squares += np.square(part).sum(axis=0)
            count += len(chunk)
        mean = total / max(count, 1)
        variance = np.maximum(squares / max(count, 1) - mean ** 2, 0.0)
        variance = np.maximum(variance, 1e-4 * variance.mean() if variance.mean() > 0 else 1.0)
        return mean.astype(np.float32), variance.astype(np.float32)


@dataclass
class SoftmaxFit:
    """The fitted head and how the fit went."""

    kernel: np.ndarray  # (dim, classes), for standardised inputs
    bias: np.ndarray  # (classes,)
    iterations: int
    converged: bool
    message: str
    history: list  # per reported iteration: iteration, loss, objective, accuracy (train), val_loss, val_accuracy


def fit_softmax(train: Matrix, labels, num_classes: int, *, val: Matrix | None = None, val_labels=None,
                sample_weight=None, c: float = 1.0, max_iterations: int = MAX_ITERATIONS,
                tolerance: float = TOLERANCE, on_iteration=None, on_report=None) -> SoftmaxFit:
    """L-BFGS on the L2-regularised softmax cross-entropy (see the module docstring).

    Only some iterations are reported (see :class:`_Reporter`): the first, the last, and a
    few between; only those get a validation pass.

    Args:
        train, val: standardised feature matrices; ``val`` only reports progress.
        labels: ``(n,)`` class index per training row.
        sample_weight: ``(n,)`` weight per row (balanced class weights), default 1; the
            reported training loss is weighted, the validation loss is not (as Keras does).
            Each entry's ``objective`` is the weighted training loss plus the L2 penalty:
            what the fit minimises, never higher than the entry before's.
        on_iteration: called after every iteration as ``on_iteration(iteration, loss)``,
            ``loss`` being the training loss of the latest evaluation; may raise to stop
            (cancellation, the NaN guard).
        on_report: called with each history entry; may raise to stop.

    Returns:
        A :class:`SoftmaxFit`; ``converged`` is False when ``max_iterations`` ran out first.
        Its last history entry holds the returned weights' figures.
    """
    from scipy.optimize import minimize

    labels = np.asarray(labels, dtype=np.int64)
    n, dim, k = len(labels), train.dim, num_classes
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    last = {}

    def objective(theta):
        kernel, bias = _unpack(theta, dim, k)
        loss, correct = 0.0, 0
        grad_kernel, grad_bias = np.zeros((dim, k)), np.zeros(k)
        for where, x in train.chunks():
            probs = _softmax(x @ kernel.astype(np.float32) + bias.astype(np.float32))
            y, w = labels[where], weights[where]
            picked = probs[np.arange(len(y)), y]
            loss -= float((w * np.log(np.maximum(picked, 1e-300))).sum())
            correct += int((probs.argmax(axis=1) == y).sum())
            residual = probs
            residual[np.arange(len(y)), y] -= 1.0
            residual *= w[:, None]
            grad_kernel += (x.T @ residual.astype(np.float32)).astype(np.float64)
            grad_bias += residual.sum(axis=0)
        penalty = 1.0 / (c * n)
        value = loss / n + 0.5 * penalty * float((kernel ** 2).sum())
        grad = np.concatenate([(grad_kernel / n + penalty * kernel).ravel(), grad_bias / n])
        last.update(theta=theta.copy(), loss=loss / n, accuracy=correct / n)
        return value, grad

    def figures(theta) -> dict:
        """A history entry for ``theta``: the training figures from the objective's latest
        evaluation when it was at ``theta`` (after an L-BFGS iteration it nearly always is),
        else from a fresh pass; the objective is that loss plus the penalty, as
        :func:`objective` adds them; the validation figures from a pass over ``val``."""
        kernel, bias = _unpack(theta, dim, k)
        entry = {"loss": last["loss"], "accuracy": last["accuracy"]} if np.array_equal(theta, last.get("theta")) \
            else dict(zip(("loss", "accuracy"), _evaluate(train, labels, kernel, bias, weights)))
        entry["objective"] = entry["loss"] + 0.5 / (c * n) * float((kernel ** 2).sum())
        entry["val_loss"], entry["val_accuracy"] = (None, None) if val is None else \
            _evaluate(val, np.asarray(val_labels), kernel, bias)
        return entry

    reporter = _Reporter(figures, on_report)

    def callback(theta):
        reporter.iteration += 1
        if on_iteration:
            on_iteration(reporter.iteration, last["loss"])
        if reporter.due():
            reporter.report(theta)

    with _blas_threads(len(train.rows) * dim):
        result = minimize(objective, np.zeros(dim * k + k), jac=True, method="L-BFGS-B", callback=callback,
                          options={"maxiter": max_iterations, "gtol": tolerance})
        reporter.finish(result.x, int(result.nit))
    kernel, bias = _unpack(result.x, dim, k)
    converged = bool(result.success) and result.nit < max_iterations
    return SoftmaxFit(kernel.astype(np.float32), bias.astype(np.float32), int(result.nit), converged,
                      str(result.message), reporter.history)


class _Reporter:
    """Which L-BFGS iterations become history entries: the first, then each iteration at
    least REPORT_GROWTH times the last reported one (1, 2, 3, 5, 8, 12, 17, 25, 36, 51, 73,
    104, 148, 210, 297, 421: 16 up to the 500-iteration cap, so the curve still shows the
    fast start and the slow finish), and whatever iteration ends REPORT_SECONDS or more
    after the last report (a fit of a large streamed matrix, seconds per iteration, still
    shows progress once a second, what the app's live view refreshes at); and, by
    :meth:`finish`, the last. A report costs a validation pass, a history entry and an
    event on disk: one per iteration made hundreds of chart points and events that showed
    no more than these, and a validation pass per iteration over a large split."""

    def __init__(self, figures, on_report):
        self.figures, self.on_report = figures, on_report
        self.history, self.iteration = [], 0
        self.reported, self.theta, self.time = 0, None, time.monotonic()

    def due(self) -> bool:
        return (self.reported == 0 or self.iteration >= self.reported * REPORT_GROWTH
                or time.monotonic() - self.time >= REPORT_SECONDS)

    def report(self, theta, iteration=None) -> None:
        entry = self.figures(theta)
        entry["iteration"] = self.iteration if iteration is None else iteration
        self.reported, self.theta, self.time = entry["iteration"], theta.copy(), time.monotonic()
        self.history.append(entry)
        if self.on_report:
            self.on_report(entry)

    def finish(self, theta, iterations: int) -> None:
        """Report the final weights unless the last report was of them already."""
        if self.theta is None or self.reported != iterations or not np.array_equal(theta, self.theta):
            self.report(theta, iterations)


def _blas_threads(elements: int):
    """One BLAS thread for a fit of a matrix of up to SINGLE_THREAD_ELEMENTS values, else
    the libraries' own choice. Each L-BFGS iteration alternates a little matrix product
    (numpy's BLAS) with the optimiser's vector work (scipy's own BLAS), and two thread
    pools that wake and spin in turn fight over the cores: on two busy cores 340 x 2048
    features took 26 to 63 s for 230 iterations, 1.3 to 2.4 s with one thread
    (bench/head_fit_speed.py); 30 iterations on 20,000 x 1280 were still 2.3x faster with
    one. Past the threshold a matrix product is long enough for threads to pay."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas") if elements <= SINGLE_THREAD_ELEMENTS else nullcontext()


def _unpack(theta, dim, k):
    return theta[:dim * k].reshape(dim, k), theta[dim * k:]


def _softmax(logits) -> np.ndarray:
    logits = logits.astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def _evaluate(matrix: Matrix, labels, kernel, bias, weights=None) -> tuple:
    """``(mean cross-entropy, accuracy)`` of the head on ``matrix``; the cross-entropy
    weighted by ``weights`` (one per row) when given, as the objective's is."""
    loss, correct = 0.0, 0
    for where, x in matrix.chunks():
        probs = _softmax(x @ kernel.astype(np.float32) + bias.astype(np.float32))
        y = labels[where]
        picked = np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300))
        loss -= float((picked if weights is None else weights[where] * picked).sum())
        correct += int((probs.argmax(axis=1) == y).sum())
    count = max(len(labels), 1)
    return loss / count, correct / count
