"""Where the runs folder and the caches are: facts every layer needs, kept below them all."""

import os
from pathlib import Path


def runs_root(runs_dir=None) -> Path:
    """The runs folder: the argument, else ``$TL_RUNS_DIR``, else ``./runs``."""
    return Path(runs_dir or os.environ.get("TL_RUNS_DIR") or "runs").expanduser().resolve()


def cache_root(runs_dir=None) -> Path:
    """Where cached features live: ``$TL_CACHE_DIR``, else ``<runs root>/.cache``."""
    return Path(os.environ.get("TL_CACHE_DIR") or runs_root(runs_dir) / ".cache").expanduser()
