"""Is a recorded pid still the process that recorded it? (Pids are reused.)

A run folder and a job claim store the pid of the process that owns them together with its
start time (``/proc/<pid>/stat``, field 22, in clock ticks since boot). A pid that is alive
but started at another time is another process, so the owner is gone. Where ``/proc`` does
not exist (macOS) only the pid is compared.
"""

import os


def _stat(pid) -> list | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or ``None``
    (no such process, or no ``/proc``)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def process_start(pid) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, or ``None`` (no such
    process, or no ``/proc``)."""
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 and fields[19].isdigit() else None


def same_process(pid, start=None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and, when ``start`` is known, still the
    process that started at ``start``."""
    try:
        pid = int(pid)
        if pid <= 0:  # 0 and negative numbers name process groups, never one process
            return False
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:
        pass  # alive, someone else's
    except OSError:
        return False
    fields = _stat(pid)
    if fields is None:
        return True  # no /proc: the pid is all we can check
    if fields and fields[0] == "Z":
        return False
    return start is None or process_start(pid) == start


def own_record() -> dict:
    """``{"pid": ..., "pid_start": ...}`` of this process, for a status or claim file."""
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid())}
