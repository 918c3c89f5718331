"""Helpers for files Keras downloads into its cache (weights, datasets)."""

import os
import re


def keras_home() -> str:
    """The folder Keras caches downloads in, by Keras's own rule and without importing it
    (the app's pages ask before any TensorFlow is loaded): ``$KERAS_HOME``, else ``~/.keras``,
    or ``/tmp/.keras`` when the home folder is not writable."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def failed_url(message: str) -> str | None:
    """The URL in Keras's "URL fetch failure on <url>: ..." message, if any."""
    match = re.search(r"URL fetch failure on (\S+): ", message)
    return match.group(1) if match else None


def is_fetch_failure(message) -> bool:
    """Whether a Keras exception (or its text) says a download failed (Keras raises a bare
    ``Exception`` for that)."""
    message = str(message)
    return "URL fetch failure" in message or "urlopen" in message.lower()
