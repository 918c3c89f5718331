"""The stderr filter of ``python -m tl``: while a command runs (unless ``--verbose``), stderr
carries only the project's own lines (errors, notes, progress); what other libraries write
there, from Python (warnings, logging, prints) or natively to descriptor 2 (TensorFlow's
start-up lines), is dropped."""

import contextlib
import os
import sys


class _OwnLines:
    """``sys.stderr`` that passes on what the project's code writes (errors, notes, progress)
    and drops what other libraries write there (Python warnings, their logging and prints)."""

    def __init__(self, target):
        self._target = target

    def write(self, text):
        return self._target.write(text) if _written_by_project() else len(text)

    def writelines(self, lines):
        if _written_by_project():
            self._target.writelines(lines)

    def __getattr__(self, name):  # flush, isatty, encoding...: the stream's own
        return getattr(self._target, name)


def _written_by_project() -> bool:
    """Whether the innermost caller outside the standard library (print, warnings and
    logging all write through it) is a module of ``tl``; with no such caller it is the
    interpreter's own line, such as an uncaught exception's traceback, and passes."""
    frame = sys._getframe(2)  # the caller of _OwnLines.write (or .writelines)
    while frame is not None:
        spec = frame.f_globals.get("__spec__")  # names `python -m tl`'s __main__ tl.__main__
        top = (getattr(spec, "name", None) or frame.f_globals.get("__name__") or "").partition(".")[0]
        if top not in sys.stdlib_module_names:
            return top == "tl"
        frame = frame.f_back
    return True


@contextlib.contextmanager
def own_lines_on_stderr(quiet: bool = True):
    """While it lasts (with ``quiet``), stderr carries the project's own lines only.

    Native libraries write straight to file descriptor 2 (TensorFlow's start-up lines, some
    of which no setting silences on a GPU machine), so that descriptor points at the null
    device while Python's ``sys.stderr`` writes to a copy of the real one, through
    :class:`_OwnLines`. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 as well, so TensorFlow does
    not format them at all. Everything is put back on exit, for in-process callers (tests).
    """
    if not quiet or sys.stderr is None:  # None: started with stderr closed
        yield
        return
    level_was_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    stream = sys.stderr
    stream.flush()
    try:
        on_fd2 = stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a test's capture, not a descriptor
        on_fd2 = False
    real = os.dup(2)
    target = (open(real, "w", buffering=1, encoding=stream.encoding, errors="backslashreplace", closefd=False)
              if on_fd2 else stream)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = _OwnLines(target)
    try:
        yield
    finally:
        sys.stderr = stream
        if target is stream:
            stream.flush()
        else:
            target.close()  # its descriptor, closefd=False, is closed below
        os.dup2(real, 2)
        os.close(real)
        if not level_was_set:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
