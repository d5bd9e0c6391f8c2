"""A folder that keeps reconstructed PTQ blocks between runs, so a killed run resumes.

Each entry is ``<key>.npz`` (the block's arrays, read back with ``allow_pickle=False``) plus
``<key>.json`` (its log), both written to a temporary name and renamed into place, JSON last: an
entry is complete exactly when its JSON exists. Used by
:func:`frugal.transforms.quant.block_recon.quantize_resnet` through its ``block_cache`` argument.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


class ReconCache:
    """Reconstructed blocks under `folder`, by key (see ``block_recon.run_digest``)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"cache key {key!r} must be a plain file name")
        return self.folder / f"{key}.npz", self.folder / f"{key}.json"

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, log) of a finished entry, or None."""
        arrays_path, log_path = self._paths(key)
        if not log_path.is_file() or not arrays_path.is_file():
            return None
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        return arrays, json.loads(log_path.read_text())

    def put(self, key: str, arrays: dict[str, np.ndarray], log: dict) -> None:
        """Stores an entry atomically (arrays first, then the log that marks it complete)."""
        arrays_path, log_path = self._paths(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(arrays_path, lambda f: np.savez(f, **arrays))
        _atomic_write(log_path, lambda f: f.write(json.dumps(log, default=float).encode()))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.json")) if self.folder.is_dir() else 0


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
