"""Where a run's backbone starts: ImageNet, random, a weights file, or the backbone of an
earlier run (checked to be usable, then copied layer by layer)."""

import hashlib
from pathlib import Path

from tl import runs
from tl.config import RunConfig
from tl.errors import ConfigError, UserError
from tl.paths import runs_root
from tl.strategies import STRATEGIES


def initial_weights(cfg: RunConfig, runs_dir=None):
    """What the backbone starts from, and a string that identifies it for the feature cache.

    Returns ``(weights, identity)`` where ``weights`` is ``None``, ``"imagenet"``, a file
    path, or a :class:`tl.runs.Run` whose backbone to copy.
    """
    if not STRATEGIES[cfg.strategy].pretrained or cfg.weights == "none":
        return None, f"none:seed={cfg.seed}"
    if cfg.weights == "imagenet":
        return "imagenet", "imagenet"
    if cfg.weights.startswith("run:"):
        run = source_run(cfg, runs_dir)
        stamp = run.model_path.stat().st_mtime_ns
        return run, f"run:{run.id}:{stamp}"
    path = Path(cfg.weights).expanduser()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return str(path), f"file:{digest}"


def source_run(cfg: RunConfig, runs_dir=None):
    """The finished run that ``weights='run:<id>'`` names, checked to be usable."""
    run_id = cfg.weights[4:]
    try:
        run = runs.get(run_id, runs_dir)
    except UserError:
        raise ConfigError(f"weights='run:{run_id}' names no run in {runs_root(runs_dir)}; "
                          "`python -m tl runs` lists them.") from None
    if run.status().get("status") != "done" or not run.model_path.exists():
        raise ConfigError(f"Run '{run_id}' has not finished training, so its backbone cannot be reused; "
                          "pick a run with status done.")
    if run.config.backbone != cfg.backbone:
        raise ConfigError(f"Run '{run_id}' used backbone '{run.config.backbone}'; set backbone to "
                          f"'{run.config.backbone}' to start from its weights.")
    return run


def transfer_backbone(run, backbone) -> int:
    """Copy weights layer by layer (by name) from ``run``'s saved backbone into ``backbone``.

    Raises:
        ConfigError: a layer the new backbone needs is missing from the run's backbone.
    """
    saved = run.load_model()
    source = {layer.name: layer for layer in saved.get_layer("backbone").layers}
    copied = 0
    for layer in backbone.layers:
        if not layer.weights:
            continue
        match = source.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if match is None or [tuple(w.shape) for w in match.weights] != shapes:
            raise ConfigError(
                f"Run '{run.id}' has no matching weights for layer '{layer.name}' (was it cut "
                "earlier, or trained at another image size?); pick another run or strategy."
            )
        layer.set_weights(match.get_weights())
        copied += 1
    return copied
