"""Small file helpers: every write is atomic (temp file in the same folder + rename)."""

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_json(path, obj) -> None:
    """Atomically write ``obj`` as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def read_json(path, default=None):
    """Read a JSON file; return ``default`` when it does not exist (other problems raise:
    callers that must survive a damaged file check it, as :mod:`tl.runs` does)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def append_jsonl(path, obj) -> None:
    """Append one JSON line with a single ``write`` on an O_APPEND descriptor.

    An append-only log cannot be rewritten atomically on every event, so each record is
    one write of one whole line; readers skip a torn last line (see :func:`read_jsonl`).
    """
    line = (json.dumps(obj, default=_json_default) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path, start: int = 0):
    """Return ``(records, end_offset)`` for the whole lines of a JSONL file from ``start``.

    A last line without its newline (a write in progress, or a crash mid-write) is left
    for the next call, so callers can poll with the returned offset.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, start + end


def os_error_sentence(exc: OSError, path, what: str = "write") -> str:
    """One sentence for a file-system error at ``path``: what happened and what to do."""
    import errno

    code, where = exc.errno, f"'{path}'"
    if code == errno.ENOSPC:
        return f"There is no space left on the disk that holds {where}: free some space and try again."
    if code == errno.EROFS:
        return f"{where} is on a read-only file system: choose a writable folder and try again."
    if code in (errno.EACCES, errno.EPERM):
        return f"Permission denied to {what} {where}: choose a folder you can {what}, or fix its permissions."
    if code == errno.ENAMETOOLONG:
        return f"The path {where} is too long for the file system: use shorter names."
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return f"{where} is in the way (a file where a folder belongs, or the reverse): move it and try again."
    if code == errno.ENOENT:
        return f"{where} does not exist (any more): was it deleted while in use?"
    return f"Cannot {what} {where} ({exc.strerror or type(exc).__name__}): check the disk and try again."


def _remove_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _json_default(obj):
    """Let numpy scalars and arrays, and paths, go into JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def sha256_of(handle, chunk: int = 1024 * 1024) -> str:
    """Hex sha256 of a binary file object, read in chunks from its start (it is left at the
    start again), so a large download or upload is never held in memory."""
    import hashlib

    handle.seek(0)
    digest = hashlib.sha256()
    while block := handle.read(chunk):
        digest.update(block)
    handle.seek(0)
    return digest.hexdigest()
