"""Build-on-first-use for the C++ CPU kernels in this folder, registered with XLA through the FFI.

A kernel's ``.cc`` file is compiled once per machine with the system C++ compiler against the
XLA FFI headers that ship inside jaxlib (``jax.ffi.include_dir()``), so installing frugal needs no
build step and downloads nothing. The library lands in a cache folder under a name that hashes the
source, the compiler and its version, the flags, jaxlib's version and the CPU, and is written
atomically (a temp file, then ``os.replace``; temp files are removed on every path), so parallel
test workers and reinstalls never load a stale or half-written file.

Loading a shared library runs its code, so a cached library is loaded only when (1) the cache
folder and the file belong to this user and nobody else can write them, and (2) its SHA-256 equals
the digest recorded next to it when it was built (``<library>.sha256``). A library that fails
either check is rebuilt when the folder is ours, else not loaded.

Every caller must work without the library: :func:`load` returns None when kernels are disabled
(``FRUGAL_NATIVE=0``), when no compiler is found, or when anything about the cache or the build
fails (warned once, with the reason), and the wrappers then use their XLA path. :func:`status`
says which.

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


def compiler_version(compiler: str) -> str:
    """The first line of `compiler --version` (part of the cache key: an upgraded compiler rebuilds)."""
    try:
        result = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _library_path(name: str, source: bytes, compiler: str, flags: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for part in (
        source,
        compiler.encode(),
        compiler_version(compiler).encode(),
        " ".join(flags).encode(),
        jaxlib.__version__.encode(),
        _cpu_signature().encode(),
        platform.machine().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"lib{name}-{digest.hexdigest()[:16]}.so"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _private(path: Path) -> str | None:
    """Why `path` could have been written by someone else (None when only this user can write it)."""
    if not hasattr(os, "getuid"):
        return None
    info = path.stat()
    if info.st_uid != os.getuid():
        return f"{path} belongs to another user"
    if info.st_mode & 0o022:
        return f"{path} is writable by group or others"
    return None


def _verified(library: Path) -> str | None:
    """Why the cached `library` must not be loaded (None when it passes every check)."""
    for path in (library.parent, library):
        problem = _private(path)
        if problem:
            return problem
    recorded = _digest_path(library)
    if not recorded.exists():
        return f"no build-time digest next to {library.name}"
    if recorded.read_text().strip() != _sha256(library):
        return f"{library.name} does not match its build-time digest"
    return None


def _compile(source_path: Path, target: Path, compiler: str, flags: tuple[str, ...]) -> str | None:
    """Compiles into a temp file next to target, records its digest, renames it; error text or None."""
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp.so", dir=target.parent)
    os.close(fd)
    command = [compiler, *flags, *_COMMON_FLAGS, f"-I{jax.ffi.include_dir()}", str(source_path), "-o", tmp]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            return (result.stderr or result.stdout).strip()[-2000:] or f"exit status {result.returncode}"
        os.chmod(tmp, 0o755)
        _write_atomic(_digest_path(target), (_sha256(Path(tmp)) + "\n").encode())
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(name: str) -> ctypes.CDLL | None:
    try:
        return _build_or_raise(name)
    except Exception as error:  # any cache or build trouble: the XLA path, one warning
        _reasons[name] = f"the kernel cache failed ({type(error).__name__}: {error})"
        warnings.warn(
            f"frugal: native kernel {name!r} unavailable, using the XLA path: {_reasons[name]}",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _build_or_raise(name: str) -> ctypes.CDLL | None:
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
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    problem = _private(folder)
    if problem:
        raise PermissionError(f"{problem}; set FRUGAL_NATIVE_CACHE to a folder only you can write")
    errors = []
    for flags in _FLAG_SETS:
        target = _library_path(name, source, compiler, flags)
        if target.exists() and _verified(target) is not None:
            errors.append(f"rebuilding {target.name}: {_verified(target)}")
            target.unlink()
        if not target.exists():
            error = _compile(source_path, target, compiler, flags)
            if error is not None:
                errors.append(f"{' '.join(flags)}: {error}")
                continue
        problem = _verified(target)
        if problem is not None:
            errors.append(f"not loading {target}: {problem}")
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
