"""Where things are on disk: the runs folder, the caches, the data root (uploads) and the
made datasets under it. Facts every layer needs, kept below them all."""

import os
from pathlib import Path


def runs_root(runs_dir=None) -> Path:
    """The runs folder: the argument, else ``$TL_RUNS_DIR``, else ``./runs``."""
    return Path(runs_dir or os.environ.get("TL_RUNS_DIR") or "runs").expanduser().resolve()


def cache_root(runs_dir=None) -> Path:
    """Where cached features live: ``$TL_CACHE_DIR``, else ``<runs root>/.cache``."""
    return Path(os.environ.get("TL_CACHE_DIR") or runs_root(runs_dir) / ".cache").expanduser()


def data_root(runs_dir=None) -> Path:
    """Where uploads and made datasets are stored: ``$TL_DATA_DIR``, else ``<runs root>/.data``."""
    return Path(os.environ.get("TL_DATA_DIR") or runs_root(runs_dir) / ".data").expanduser()


def made_root(runs_dir=None) -> Path:
    """Where made datasets live: ``<data root>/made``."""
    return data_root(runs_dir) / "made"


def converted_models_root(cache_dir) -> Path:
    """Where the inference engine keeps converted models: ``$TL_CONVERTED_MODELS_DIR``, else
    ``<cache>/openvino``. Each is named by a digest of its weights and written atomically, so
    several runs folders and processes can share one folder."""
    return Path(os.environ.get("TL_CONVERTED_MODELS_DIR") or Path(cache_dir) / "openvino").expanduser()
