"""The exact head fit with its reporting, before and after reporting became bounded.

    python bench/head_fit_speed.py [--repeats 3] [--before 9bdb756]

Fits the softmax head on 340 x 2048 standardised features with 80 validation rows (10
classes, two Gaussian blobs per class in a 64-dimensional space, mixed into 2048 ReLU'd
features with a falling spectrum, so that the fit takes a couple of hundred L-BFGS
iterations as real backbone features do), exactly as ``Learner._fit_exactly`` does: the
recorder turns reports into history entries and epoch events written to a real run
folder's events.jsonl. Three variants, alternating, ``--repeats`` times:

- before: ``tl/head_fit.py`` and ``tl/history.py`` as of ``--before`` (one report, one
  validation pass and one event per iteration; BLAS threads as the libraries choose);
- before, one BLAS thread: the same code inside ``threadpool_limits(1)``, to tell what the
  threads cost from what the reporting cost;
- now: this working tree's code.

Prints the medians, the paired ratios, the iterations, the reported points and events, and
whether "now" fits the very same weights as "before, one BLAS thread" (the same arithmetic).
"""

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BEFORE = "9bdb756"  # the last commit that reported every L-BFGS iteration
CLASSES, DIM, TRAIN, VAL = 10, 2048, 340, 80


def features(seed: int = 0):
    """``(x_train, y_train, x_val, y_val)``: two Gaussian blobs per class in 64 latent
    dimensions, mixed into DIM non-negative features (as after a ReLU and pooling)."""
    rng = np.random.default_rng(seed)
    latent = 64
    mix = rng.normal(0, 1, (latent, DIM)) / np.arange(1, latent + 1)[:, None]
    centres = rng.normal(0, 0.5, (CLASSES, 2, latent))

    def rows(n):
        y, blob = rng.integers(0, CLASSES, n), rng.integers(0, 2, n)
        z = centres[y, blob] + rng.normal(0, 1, (n, latent))
        return np.maximum(z @ mix + rng.normal(0, 0.1, (n, DIM)), 0).astype(np.float32), y

    return (*rows(TRAIN), *rows(VAL))


def old_module(name: str, revision: str):
    """``tl/<name>.py`` as of ``revision``, imported under another name."""
    source = subprocess.run(["git", "show", f"{revision}:tl/{name}.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"before_{name}")
    exec(compile(source, f"{revision}:tl/{name}.py", "exec"), module.__dict__)
    return module


class Learner:
    """What the recorder uses of a Learner, writing to a real run folder."""

    def __init__(self):
        from tl.runs import Run

        self.run = Run(tempfile.mkdtemp(prefix="head-fit-speed-"))
        self.data = types.SimpleNamespace(splits={"train": np.arange(TRAIN)})
        self.history, self.epochs_done, self.images_seen = [], 0, 0

    def emit(self, event_type, **fields):
        return self.run.event(event_type, **fields)


def fit(head_fit, history, data, new: bool):
    """One fit as ``Learner._fit_exactly`` makes it; ``(seconds, fit, learner)``."""
    x, y, xv, yv = data
    train, val = head_fit.Matrix(x, np.arange(TRAIN)), head_fit.Matrix(xv, np.arange(VAL))
    statistics = train.own_statistics()
    train.use_statistics(*statistics)
    val.use_statistics(*statistics)
    learner = Learner()
    started = time.perf_counter()
    recorder = history.ExactFitRecorder(learner, "head")
    hooks = dict(on_iteration=recorder.iterated, on_report=recorder.add) if new else \
        dict(on_iteration=recorder.add)
    found = head_fit.fit_softmax(train, y, CLASSES, val=val, val_labels=yv, **hooks)
    recorder.flush()
    return time.perf_counter() - started, found, learner


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default=BEFORE, help="the git revision to compare with")
    args = parser.parse_args(argv)

    import scipy.optimize  # noqa: F401  (imported once, outside every timing)
    from threadpoolctl import threadpool_limits

    from tl import head_fit, history

    old_fit, old_history = old_module("head_fit", args.before), old_module("history", args.before)
    data = features()
    times = {"before": [], "before, one BLAS thread": [], "now": []}
    for repeat in range(args.repeats):
        order = list(times) if repeat % 2 == 0 else list(reversed(times))
        for variant in order:
            if variant == "now":
                seconds, now, learner = fit(head_fit, history, data, new=True)
                events = sum(e["type"] == "epoch" for e in learner.run.events()[0])
            elif variant == "before":
                seconds, before, _ = fit(old_fit, old_history, data, new=False)
            else:
                with threadpool_limits(limits=1, user_api="blas"):
                    seconds, same_arithmetic, _ = fit(old_fit, old_history, data, new=False)
            times[variant].append(seconds)
    ratios = [b / n for b, n in zip(times["before"], times["now"])]
    for variant, found in times.items():
        print(f"{variant:26s} median {np.median(found):6.3f} s  ({', '.join(f'{t:.3f}' for t in found)})")
    print(f"ratio before / now: median {np.median(ratios):.1f}x (pairs {', '.join(f'{r:.1f}' for r in ratios)})")
    print(f"reporting alone (before, one thread / now): "
          f"{np.median(times['before, one BLAS thread']) / np.median(times['now']):.1f}x")
    print(f"iterations: before {before.iterations}, now {now.iterations} (converged {now.converged}); "
          f"reported points: before {len(before.history)}, now {len(now.history)} "
          f"(iterations {[e['iteration'] for e in now.history]}), epoch events now {events}")
    identical = np.array_equal(now.kernel, same_arithmetic.kernel) and np.array_equal(now.bias, same_arithmetic.bias)
    print(f"now's weights identical to before's with one BLAS thread: {identical}")


if __name__ == "__main__":
    main()
