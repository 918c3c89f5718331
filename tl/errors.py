"""Errors a user can cause, each carrying one sentence that says what to do.

The app and the CLI catch :class:`UserError` at the boundary and show its text as is;
anything else is a bug and is reported with its traceback kept in the run folder.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""


class ConfigError(UserError, ValueError):
    """A run configuration field holds an unknown or out-of-range value."""


class DataError(UserError, ValueError):
    """A dataset cannot be used (missing folder, one class, empty class, ...)."""


class DownloadError(UserError, RuntimeError):
    """A file that must be downloaded could not be fetched (usually: no internet)."""


class RunNotFound(UserError, LookupError):
    """A run id that does not exist in the runs folder."""


class Cancelled(Exception):
    """Raised inside training when the user asked the run to stop."""


class TrainingFailed(Exception):
    """Training cannot go on (for example the loss became NaN); the text says why."""
