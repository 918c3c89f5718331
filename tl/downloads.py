"""Helpers for files Keras downloads into its cache (weights, datasets)."""

import os
import re


def keras_home() -> str:
    """The folder Keras caches downloads in (``$KERAS_HOME``, else ``~/.keras``)."""
    try:
        from keras.src.backend.config import keras_home as _home

        return _home()
    except ImportError:  # pragma: no cover - other Keras layouts
        return os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))


def failed_url(message: str) -> str | None:
    """The URL in Keras's "URL fetch failure on <url>: ..." message, if any."""
    match = re.search(r"URL fetch failure on (\S+): ", message)
    return match.group(1) if match else None


def is_fetch_failure(message) -> bool:
    """Whether a Keras exception (or its text) says a download failed (Keras raises a bare
    ``Exception`` for that)."""
    message = str(message)
    return "URL fetch failure" in message or "urlopen" in message.lower()
