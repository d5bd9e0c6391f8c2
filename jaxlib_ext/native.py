"""Build-on-first-use for the C++ CPU kernels in this folder, registered with XLA through the FFI.

A kernel's ``.cc`` file is compiled once per machine with the system C++ compiler against the
XLA FFI headers that ship inside jaxlib (``jax.ffi.include_dir()``), so installing frugal needs no
build step and downloads nothing. The library lands in a cache folder under a name that hashes the
source, the compiler, the flags, jaxlib's version and the CPU, and is written atomically (a temp
file, then ``os.replace``), so parallel test workers and reinstalls never load a stale or
half-written file.

Every caller must work without the library: :func:`load` returns None when kernels are disabled
(``FRUGAL_NATIVE=0``), when no compiler is found, or when compiling fails (warned once, with the
compiler's message), and the wrappers then use their XLA path. :func:`status` says which.

Environment: ``FRUGAL_NATIVE=0`` disables the kernels; ``CXX`` picks the compiler (default
``c++``, then ``g++``, then ``clang++``); ``FRUGAL_NATIVE_CACHE`` moves the cache (default
``$XDG_CACHE_HOME/frugal/native`` or ``~/.cache/frugal/native``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import jax
import jaxlib

_SOURCE_DIR = Path(__file__).resolve().parent
# -march=native: the library is built where it runs, and the vectorized loops want the widest
# registers the CPU has. The fallback flags serve compilers that reject it.
_FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
_COMMON_FLAGS = ("-std=c++17", "-shared", "-fPIC", "-w")

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}


def enabled() -> bool:
    return os.environ.get("FRUGAL_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("FRUGAL_NATIVE_CACHE"):
        return Path(os.environ["FRUGAL_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "frugal" / "native"


def find_compiler() -> str | None:
    for name in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++")):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_signature() -> str:
    # The CPU's feature flags, so a cache shared between machines never serves a library built
    # for instructions this CPU lacks (-march=native).
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _library_path(name: str, source: bytes, compiler: str, flags: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for part in (
        source,
        compiler.encode(),
        " ".join(flags).encode(),
        jaxlib.__version__.encode(),
        _cpu_signature().encode(),
        platform.machine().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"lib{name}-{digest.hexdigest()[:16]}.so"


def _compile(source_path: Path, target: Path, compiler: str, flags: tuple[str, ...]) -> str | None:
    """Compiles into a temp file next to target and renames it; returns the error text or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    command = [compiler, *flags, *_COMMON_FLAGS, f"-I{jax.ffi.include_dir()}", str(source_path), "-o", tmp]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            return (result.stderr or result.stdout).strip()[-2000:] or f"exit status {result.returncode}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(name: str) -> ctypes.CDLL | None:
    if not enabled():
        _reasons[name] = "disabled by FRUGAL_NATIVE=0"
        return None
    if platform.system() == "Windows":
        _reasons[name] = "native kernels are built on Linux and macOS only"
        return None
    compiler = find_compiler()
    if compiler is None:
        _reasons[name] = "no C++ compiler found (set CXX, or install g++ / clang++)"
        return None
    source_path = _SOURCE_DIR / f"{name}.cc"
    source = source_path.read_bytes()
    errors = []
    for flags in _FLAG_SETS:
        target = _library_path(name, source, compiler, flags)
        if not target.exists():
            error = _compile(source_path, target, compiler, flags)
            if error is not None:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        try:
            library = ctypes.CDLL(str(target))
        except OSError as error:  # e.g. a library built elsewhere for another CPU
            errors.append(f"loading {target}: {error}")
            continue
        _reasons[name] = f"built with {compiler} {' '.join(flags)} at {target}"
        return library
    _reasons[name] = f"compiling {source_path.name} failed"
    warnings.warn(
        f"frugal: could not build the native kernel {name!r}; using the XLA path instead.\n" + "\n".join(errors),
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library for jaxlib_ext/<name>.cc, building it on first use; None if unavailable."""
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build(name)
        return _loaded[name]


def status(name: str) -> str:
    """One line saying whether the native kernel `name` is in use, and why not if it is not."""
    library = load(name)
    return ("native: " if library is not None else "XLA fallback: ") + _reasons.get(name, "")
