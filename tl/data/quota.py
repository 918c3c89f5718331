"""One cap on what the data root stores: uploads (zips and folders), pools of unlabeled photos
(:mod:`tl.pool_jobs`) and made datasets.

A small server's disk (Streamlit Community Cloud's included) fills up as a class uploads.
``$TL_DISK_BUDGET_MB`` (default 5,000) caps the data root's uploads, pools and made datasets
together. Before something new is stored, :func:`make_room` frees space, oldest first:

1. uploads no run was trained on and pools not being ranked, by when they were last used (an
   upload or pool used again is touched, so it counts as new);
2. only when ``$TL_DISK_BUDGET_MB`` is set explicitly: made datasets no run was trained on
   and nobody has changed for ``IDLE_DAYS`` days.

What a run refers to is never removed: a run's ``data_dir`` names its upload, and a made
dataset's ``refs/<run id>.json`` name its runs. This module holds the one rule for "a made
dataset is in use" (:func:`live_refs`: the refs of runs that still exist; a ref left by a
deleted run holds nothing and is removed), which the made datasets' own clean-up uses too. When there is still no room, :class:`DataError` says how
full the store is and what to do. Runs folders themselves are not counted here.

Plain Python: no TensorFlow, no Streamlit.
"""

import os
import re
import shutil
import time
from pathlib import Path

from tl.errors import DataError
from tl.files import read_json
from tl.runs import list_runs

DISK_ENV = "TL_DISK_BUDGET_MB"
DEFAULT_MB = 5000.0
IDLE_DAYS = 30
MB = 2 ** 20
UPLOAD = re.compile(r"^[0-9a-f]{16}$")  # tl.ingest stores each upload under its digest's first 16 hex


def cap_mb() -> tuple:
    """``(MB, explicit)``: the cap, and whether ``$TL_DISK_BUDGET_MB`` set it (0: no cap)."""
    text = os.environ.get(DISK_ENV, "").strip()
    if not text:
        return DEFAULT_MB, False
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{DISK_ENV} must be a number of megabytes, e.g. 5000. Received: {text!r}.") from None
    return (value if value > 0 else float("inf")), True


def size_of(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed; unreadable parts count 0)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def entries(root: Path, runs_dir=None, which_in_use: bool = True) -> list:
    """What the store holds: dicts ``{"path", "kind" ("upload", "pool" or "made"), "bytes",
    "used" (last use, a time), "in_use" (a run refers to it)}``. Without
    ``which_in_use`` the runs are not read and ``in_use`` is ``None``."""
    root = Path(root)
    used_by_runs = _upload_folders_of_runs(runs_dir) if which_in_use else None
    found = []
    try:
        listing = list(os.scandir(root))
    except OSError:
        return found
    for item in listing:
        try:
            if not item.is_dir(follow_symlinks=False):
                continue
            if UPLOAD.match(item.name):
                path = Path(item.path)
                found.append({"path": path, "kind": "upload", "bytes": size_of(path),
                              "used": _last_use(path),
                              "in_use": None if used_by_runs is None else path.resolve() in used_by_runs})
        except OSError:
            continue
    pools = root / "pools"  # tl.pool_jobs: removable like uploads, unless it is being ranked now
    if pools.is_dir():
        for path in sorted(p for p in pools.iterdir() if p.is_dir()):
            found.append({"path": path, "kind": "pool", "bytes": size_of(path), "used": _last_use(path),
                          "in_use": _ranking_now(path)})
    made = root / "made"
    if made.is_dir():
        for path in sorted(p for p in made.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.append({"path": path, "kind": "made", "bytes": size_of(path), "used": _last_use(path),
                          "in_use": bool(live_refs(path))})
    return found


def make_room(root: Path, needed_bytes: int, runs_dir=None, what: str = "This upload") -> list:
    """Free space under the cap for ``needed_bytes`` more, removing the oldest unreferenced
    uploads and idle pools (and, with the cap set explicitly, made datasets idle for ``IDLE_DAYS``).

    Returns:
        The paths removed.

    Raises:
        DataError: no room even after that (one sentence: how full, what to do).
    """
    cap, explicit = cap_mb()
    if cap == float("inf"):
        return []
    # Sizes first: the runs are read (every run's config) only when something must go.
    if sum(entry["bytes"] for entry in entries(root, which_in_use=False)) + needed_bytes <= cap * MB:
        return []
    held = entries(root, runs_dir)
    total = sum(entry["bytes"] for entry in held)
    idle = time.time() - IDLE_DAYS * 86400
    removable = [e for e in held if not e["in_use"] and (e["kind"] != "made" or (explicit and e["used"] < idle))]
    removed = []
    for entry in sorted(removable, key=lambda e: (e["kind"] == "made", e["used"])):
        if total + needed_bytes <= cap * MB:
            break
        shutil.rmtree(entry["path"], ignore_errors=True)
        if not entry["path"].exists():
            total -= entry["bytes"]
            removed.append(entry["path"])
    if total + needed_bytes > cap * MB:
        raise DataError(f"{what} ({needed_bytes / MB:,.0f} MB) does not fit: the app's storage holds "
                        f"{total / MB:,.0f} of its {cap:,.0f} MB ({DISK_ENV}) in uploads and made datasets that "
                        "runs still use; delete runs or made datasets you no longer need, then try again.")
    return removed


def touch(path: Path) -> None:
    """Mark an upload or made dataset as used now (it is then removed last)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _ranking_now(path: Path) -> bool:
    """Whether a pool's process (:mod:`tl.pool_jobs`) is ranking it now: queued or running by
    its status file, the process still alive."""
    from tl.processes import same_process

    try:
        record = read_json(path / "status.json", {})
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("status") not in ("queued", "running"):
        return False
    return not record.get("pid") or same_process(record["pid"], record.get("pid_start"),
                                                 running_since=record.get("started"))


def _last_use(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def live_refs(dataset_path: Path) -> dict:
    """run id -> the photo hashes it trained on, for the runs that still exist, read from a
    made dataset's ``refs/``. The ref of a run that no longer exists is removed."""
    found = {}
    try:
        files = sorted((Path(dataset_path) / "refs").glob("*.json"))
    except OSError:
        return found
    for file in files:
        try:
            ref = read_json(file)
            if isinstance(ref, dict) and Path(ref["run"]).is_dir():
                found[file.stem] = set(ref["hashes"])
            else:
                file.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _upload_folders_of_runs(runs_dir=None) -> set:
    """The upload folders (``<data root>/<digest>``) that runs were trained on."""
    found = set()
    try:
        listed = list_runs(runs_dir)
    except Exception:  # no runs folder yet, or not readable: nothing refers
        return found
    for run in listed:
        try:
            data_dir = run.config.data_dir
        except Exception:  # a damaged run: its data cannot be known
            continue
        if data_dir:
            path = Path(data_dir).resolve()
            found.add(path.parent if path.name == "data" else path)
    return found
