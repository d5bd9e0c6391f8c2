"""Weights-only reader for PyTorch checkpoint files, without torch and without running their code.

`load_torch_weights(path)` is the only way frugal reads a pickle. It understands both formats that
`torch.save` writes:

- the zip format (torch >= 1.6): `<prefix>/data.pkl` holds the pickled object and each tensor
  storage sits raw in `<prefix>/data/<key>` (`<prefix>/byteorder` says its byte order);
- the legacy format (`_use_new_zipfile_serialization=False`, e.g. ming024's HiFi-GAN
  `.pth.tar` files): four pickles in a row (magic number, protocol version, sys_info, the object),
  then a pickled list of storage keys, then for each key an int64 element count and the raw
  little-endian bytes.

The unpickler is restricted: `find_class` hands out ONLY `torch._utils._rebuild_tensor_v2`,
`torch._utils._rebuild_parameter`, the typed storage classes (`torch.FloatStorage`, ...) and
`collections.OrderedDict`, and for the first two it returns frugal's own functions, not torch's.
Any other global (`os.system`, `builtins.eval`, a class with a `__reduce__` trick, a function, a
`set` pickled by protocol 2) raises `UnsafePickleError` when the unpickler meets the global, i.e.
before the opcode that would call it runs. The loaded object must then be plain containers
(dict, list, tuple) of arrays, numbers, strings and None; anything else (e.g. a protocol 4 set)
is refused too. Tensors come back as NumPy arrays (copies, C-contiguous, their strides honoured).

`save_safetensors_cached` converts such weights once into the user's cache folder
(`$XDG_CACHE_HOME/frugal/weights`, else `~/.cache/frugal/weights`), so later loads read
safetensors only.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np

__all__ = [
    "UnsafePickleError",
    "flatten_weights",
    "load_torch_weights",
    "parameter_count",
    "safetensors_cache_path",
    "save_safetensors_cached",
    "weights_cache_dir",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> NumPy dtype (little-endian).
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickleError(ValueError):
    """A pickle asked for a global outside the weights-only allow-list, or held a non-weights object."""


class _StorageType:
    """Stand-in for a torch storage class (only its dtype is used); calling it is refused."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    def __call__(self, *args, **kwargs):
        raise UnsafePickleError(f"the pickle calls torch.{self.name}(...), which a weights file never does")

    def __reduce__(self):  # never pickled by frugal
        raise TypeError("_StorageType is not picklable")


class _Storage:
    """One storage: its key, dtype, element count and (once read) its flat NumPy buffer."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy-format view into another storage (elements offset .. offset + size)."""

    def __init__(self, base: _Storage, offset: int, size: int):
        self.base = base
        self.offset = offset
        self.numel = size


class _Tensor:
    """A tensor waiting for its storage's bytes (the legacy format stores them after the object)."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UnsafePickleError(f"a tensor's {what} must be a tuple of ints, got {value!r}")
    return tuple(value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *extra):
    if not isinstance(storage, (_Storage, _StorageView)):
        raise UnsafePickleError(f"_rebuild_tensor_v2 got {type(storage).__name__} instead of a storage")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise UnsafePickleError(f"a tensor's storage offset must be a non-negative int, got {storage_offset!r}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise UnsafePickleError(f"a tensor's size {size} and stride {stride} differ in length")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *extra):
    if not isinstance(data, _Tensor):
        raise UnsafePickleError(f"_rebuild_parameter got {type(data).__name__} instead of a tensor")
    return data


def _ordered_dict(*args, **kwargs):
    return OrderedDict(*args, **kwargs)


class _WeightsUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, storages: dict[str, _Storage], legacy: bool):
        super().__init__(file)
        self._path = path
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return _ordered_dict
        raise UnsafePickleError(
            f"{self._path}: refused to load the global {module}.{name}; a weights file may only use "
            "torch._utils._rebuild_tensor_v2 / _rebuild_parameter, torch.<Type>Storage and "
            "collections.OrderedDict (nothing was executed)"
        )

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"{self._path}: unknown persistent id {pid!r:.200}")
        if self._legacy:
            if len(pid) != 6:
                raise UnsafePickleError(f"{self._path}: malformed legacy storage id {pid!r:.200}")
            _, storage_type, key, _location, numel, view = pid
        else:
            if len(pid) != 5:
                raise UnsafePickleError(f"{self._path}: malformed storage id {pid!r:.200}")
            _, storage_type, key, _location, numel = pid
            view = None
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._path}: storage {key!r} has no allowed storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise UnsafePickleError(f"{self._path}: malformed storage id {pid!r:.200}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype:
            raise ValueError(f"{self._path}: storage {key!r} is used with two dtypes")
        if view is not None:
            if not (isinstance(view, tuple) and len(view) == 3):
                raise UnsafePickleError(f"{self._path}: malformed storage view {view!r:.200}")
            view_key, offset, view_size = view
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, view_size)):
                raise UnsafePickleError(f"{self._path}: malformed storage view {view!r:.200}")
            if offset < 0 or view_size < 0 or offset + view_size > numel:
                raise ValueError(f"{self._path}: storage view {view_key!r} lies outside storage {key!r}")
            return _StorageView(storage, offset, view_size)
        return storage


def _check_plain(obj, path: Path, where: str = "the object") -> None:
    """Refuses anything but plain containers of tensors, numbers, strings and None."""
    if isinstance(obj, (_Tensor, str, bytes, int, float, bool, type(None))):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise UnsafePickleError(f"{path}: {where} has a key of type {type(key).__name__}; not a weights file")
            _check_plain(value, path, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, path, f"{where}[{i}]")
        return
    raise UnsafePickleError(
        f"{path}: {where} is a {type(obj).__name__}; a weights file holds only dicts, lists, tuples, "
        "tensors, numbers, strings and None"
    )


def _materialize(obj, path: Path):
    """Replaces every pending tensor by a NumPy array and OrderedDicts by dicts."""
    if isinstance(obj, _Tensor):
        return _tensor_array(obj, path)
    if isinstance(obj, dict):
        return {key: _materialize(value, path) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_materialize(value, path) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(value, path) for value in obj)
    return obj


def _tensor_array(t: _Tensor, path: Path) -> np.ndarray:
    storage = t.storage
    base_offset = 0
    if isinstance(storage, _StorageView):
        base_offset = storage.offset
        limit = storage.numel
        storage = storage.base
    else:
        limit = storage.numel
    if storage.data is None:
        raise ValueError(f"{path}: storage {storage.key!r} has no data in the file (truncated or corrupt)")
    if any(s < 0 for s in t.size) or any(s < 0 for s in t.stride):
        raise ValueError(f"{path}: tensor with negative size or stride {t.size} / {t.stride}")
    if 0 in t.size:
        return np.zeros(t.size, storage.dtype)
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= limit:
        raise ValueError(
            f"{path}: a tensor (offset {t.offset}, size {t.size}, stride {t.stride}) reaches element {last} "
            f"of storage {storage.key!r}, which holds {limit}"
        )
    flat = storage.data[base_offset : base_offset + limit]
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride), writeable=False
    )
    return np.array(view, copy=True, order="C")


def _unpickle(data: bytes | io.BufferedReader, path: Path, storages: dict, legacy: bool):
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    return _WeightsUnpickler(file, path, storages, legacy).load()


def _corrupt(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path}: truncated or corrupt torch weights file ({type(err).__name__}: {err})")


def _load_zip(path: Path):
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise ValueError(f"{path}: a torch zip file holds exactly one <prefix>/data.pkl, found {pkl}")
            prefix = pkl[0][: -len("data.pkl")]
            order = "little"
            if prefix + "byteorder" in names:
                order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise ValueError(f"{path}: unknown byteorder {order!r}")
            storages: dict[str, _Storage] = {}
            obj = _unpickle(zf.read(pkl[0]), path, storages, legacy=False)
            _check_plain(obj, path)
            for key, storage in storages.items():
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise ValueError(f"{path}: storage record {record!r} is missing")
                raw = zf.read(record)
                dtype = storage.dtype.newbyteorder("<" if order == "little" else ">")
                need = storage.numel * dtype.itemsize
                if len(raw) < need:
                    raise ValueError(f"{path}: storage {key!r} holds {len(raw)} bytes, {need} expected")
                storage.data = np.frombuffer(raw, dtype, storage.numel).astype(storage.dtype)
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _corrupt(path, err) from err
    return obj


def _load_legacy(path: Path):
    try:
        with open(path, "rb") as f:
            header: dict = {}
            magic = _unpickle(f, path, header, legacy=True)
            if magic != LEGACY_MAGIC:
                raise ValueError(f"{path}: not a torch weights file (no zip archive, wrong legacy magic number)")
            protocol = _unpickle(f, path, header, legacy=True)
            if protocol != LEGACY_PROTOCOL:
                raise ValueError(f"{path}: unsupported legacy torch protocol {protocol!r}")
            sys_info = _unpickle(f, path, header, legacy=True)
            if not isinstance(sys_info, dict):
                raise ValueError(f"{path}: malformed legacy header (sys_info is {type(sys_info).__name__})")
            if not sys_info.get("little_endian", True):
                raise ValueError(f"{path}: big-endian legacy torch files are not supported")
            if header:
                raise UnsafePickleError(f"{path}: the legacy header refers to storages")
            storages: dict[str, _Storage] = {}
            obj = _unpickle(f, path, storages, legacy=True)
            _check_plain(obj, path)
            keys = _unpickle(f, path, {}, legacy=True)
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"{path}: malformed storage key list")
            if set(keys) != set(storages):
                raise ValueError(f"{path}: storage key list does not match the storages the object uses")
            for key in keys:
                storage = storages[key]
                count_bytes = f.read(8)
                if len(count_bytes) != 8:
                    raise EOFError(f"storage {key!r}: element count missing")
                (count,) = struct.unpack("<q", count_bytes)
                if count != storage.numel:
                    raise ValueError(f"{path}: storage {key!r} holds {count} elements, {storage.numel} expected")
                nbytes = count * storage.dtype.itemsize
                raw = f.read(nbytes)
                if len(raw) != nbytes:
                    raise EOFError(f"storage {key!r}: {len(raw)} of {nbytes} bytes")
                storage.data = np.frombuffer(raw, storage.dtype, count)
    except (EOFError, pickle.UnpicklingError, struct.error) as err:
        raise _corrupt(path, err) from err
    return obj


def load_torch_weights(path: str | Path) -> dict:
    """Reads a `torch.save` file (zip or legacy format) into nested dicts / lists of NumPy arrays,
    without torch and without running code from the file (see the module docstring).

    Raises `UnsafePickleError` for any global outside the allow-list or any non-weights object,
    `ValueError` for a truncated or corrupt file, `FileNotFoundError` for a missing one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such torch weights file")
    if zipfile.is_zipfile(path):
        obj = _load_zip(path)
    else:
        obj = _load_legacy(path)
    obj = _materialize(obj, path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: the file holds a {type(obj).__name__}, not a dict of weights")
    return obj


def flatten_weights(tree: dict, sep: str = "/") -> dict[str, np.ndarray]:
    """{"a": {"b.weight": x}} -> {"a/b.weight": x}: the arrays of a nested weights dict, by path.
    Non-array leaves (numbers, strings, e.g. an optimizer step count) are left out."""
    out: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        if isinstance(node, np.ndarray):
            out[prefix] = node
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{sep}{key}" if prefix else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{prefix}{sep}{i}" if prefix else str(i))

    walk(tree, "")
    return out


def parameter_count(tree) -> int:
    """Total number of array elements in a nested weights dict."""
    return int(sum(a.size for a in flatten_weights(tree).values())) if isinstance(tree, dict) else 0


def weights_cache_dir() -> Path:
    """Where converted weights are cached: $XDG_CACHE_HOME/frugal/weights, else ~/.cache/frugal/weights."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frugal" / "weights"


def _safe_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def safetensors_cache_path(source: str | Path, name: str) -> Path:
    """The cache file for `source` converted under `name`: keyed by a hash of the source's resolved
    path, size, modification time and `name` (a changed source gets a new file)."""
    source = Path(source)
    st = source.stat()
    key = f"{source.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return weights_cache_dir() / f"{_safe_name(name)}-{digest}.safetensors"


def save_safetensors_cached(tensors: dict[str, np.ndarray], source: str | Path, name: str) -> Path:
    """Writes `tensors` once as safetensors into the cache (see `safetensors_cache_path`) and returns
    the file; an existing cache file is kept. The write is atomic (temporary file, then os.replace)."""
    from safetensors.numpy import save_file

    target = safetensors_cache_path(source, name)
    if target.is_file():
        return target
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"tensors must map str names to NumPy arrays; bad entries: {bad[:3]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
