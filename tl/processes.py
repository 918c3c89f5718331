"""Is a recorded pid still the process that recorded it? (Pids are reused.)

A run folder and a job claim store the pid of the process that owns them together with its
start time (``/proc/<pid>/stat``, field 22, in clock ticks since boot). A pid that is alive
but started at another time is another process, so the owner is gone. Records written
before start times were kept have only the pid and the moment the owner was known to run
(a run's ``started``): a process that started after that moment is not the owner either.
Where ``/proc`` does not exist (macOS) only the pid is compared.
"""

import os

# How much later than the moment its owner was known to run a process may seem to have
# started and still be that owner: /proc/stat's boot time is in whole seconds, and the job
# manager writes a run's "started" just after it starts the worker, not before.
START_SLACK_SECONDS = 5.0


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


def started_after(pid, moment) -> bool:
    """Whether process ``pid`` started more than START_SLACK_SECONDS after ``moment``
    (seconds since the epoch), so it cannot be a process that was running at ``moment``.
    ``False`` when that cannot be told (no such process, no ``/proc``, no moment)."""
    ticks, boot = process_start(pid), _boot_time()
    if ticks is None or boot is None or not isinstance(moment, (int, float)) or isinstance(moment, bool):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > moment + START_SLACK_SECONDS


def _boot_time() -> int | None:
    """When the machine booted, in seconds since the epoch (``btime`` of ``/proc/stat``; read
    each time, as it follows changes of the clock, and only records without a start time
    ask)."""
    try:
        with open("/proc/stat") as handle:
            return next((int(line.split()[1]) for line in handle if line.startswith("btime ")), None)
    except (OSError, ValueError, IndexError):
        return None


def same_process(pid, start=None, running_since=None) -> bool:
    """Whether ``pid`` is alive (not a zombie) and, when ``start`` is known, still the
    process that started at ``start``; when only ``running_since`` is known (the epoch
    seconds at which the process was known to run), not one that started after it."""
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
    if start is None:
        return not started_after(pid, running_since)
    return process_start(pid) == start


def own_record() -> dict:
    """``{"pid": ..., "pid_start": ...}`` of this process, for a status or claim file."""
    return {"pid": os.getpid(), "pid_start": process_start(os.getpid())}
