"""Read a legacy (non-zip) ``torch.save`` file of plain tensors with the standard library's
``pickle`` and numpy, never importing torch.

A legacy checkpoint is five pickles in a row (a magic number, the protocol version, system
info, the object with tensors as persistent references to storages, the list of storage
keys), then each storage's raw bytes preceded by its element count. The object pickle may
name Python globals; an unrestricted ``pickle.load`` would import and call whatever it
names, so the unpickler here resolves only the handful a tensor dictionary needs and
refuses every other name before anything runs.
"""

import collections
import pickle
import struct
from pathlib import Path

import numpy as np

from tl.errors import UserError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch storage class -> the numpy dtype of its elements (stored little-endian here).
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8",
    "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(UserError):
    """A checkpoint file that is not a plain legacy tensor file, in one sentence."""


class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would rebuild: a view into a storage."""

    def __init__(self, storage, offset, size, stride, *_ignored):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _Unpickler(pickle.Unpickler):
    """Resolves only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
    torch's storage classes; every other global is refused."""

    def __init__(self, handle, path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _TensorRef
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        raise CheckpointError(
            f"The checkpoint '{self.path}' refers to '{module}.{name}', which a plain tensor file "
            "never needs (loading it could run code), so it was not loaded; reinstall the package "
            "it came from or use another file.")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"The checkpoint '{self.path}' holds an object that is not a tensor "
                                  "storage, so it was not loaded.")
        return pid[2], pid[1]


def read_state_dict(path) -> dict:
    """The tensors of a legacy ``torch.save`` file, as ``{name: numpy array}`` in file order.

    Raises:
        CheckpointError: the file is missing, not a legacy tensor file, truncated, or names
            a global outside the few a tensor dictionary needs.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"Cannot read the checkpoint '{path}' ({exc.strerror or exc}).") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, struct.error,
            AttributeError, IndexError) as exc:
        raise CheckpointError(f"The checkpoint '{path}' is damaged or not a legacy torch tensor file "
                              f"({type(exc).__name__}); reinstall the package it came from.") from None


def _read(handle, path) -> dict:
    header = [_Unpickler(handle, path).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise CheckpointError(f"The checkpoint '{path}' is not a legacy torch.save file (a zip-based "
                              "one, or something else), so it cannot be read here.")
    little = not isinstance(header[2], dict) or header[2].get("little_endian", True)
    order = "<" if little else ">"
    state = _Unpickler(handle, path).load()
    keys = _Unpickler(handle, path).load()
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise CheckpointError(f"The checkpoint '{path}' is not a dictionary of tensors.")
    dtypes = {ref.storage[0]: ref.storage[1] for ref in state.values()}
    storages = {}
    for key in keys:
        (count,) = struct.unpack(f"{order}q", handle.read(8))
        dtype = dtypes[key].newbyteorder(order)
        raw = handle.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise EOFError("storage cut short")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return {name: _view(storages[ref.storage[0]], ref) for name, ref in state.items()}


def _view(storage: np.ndarray, ref: _TensorRef) -> np.ndarray:
    """The tensor ``ref`` describes, copied out of its storage as a native-endian array."""
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or any(s < 0 for s in ref.stride) or (0 not in ref.size and last >= len(storage)):
        raise ValueError("tensor outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset:], shape=ref.size, strides=[s * storage.itemsize for s in ref.stride])
    return np.array(view, dtype=storage.dtype.newbyteorder("="))
