"""Writing figures: JSON that round-trips, Markdown tables, rich console tables, PNG plots.

Every command that measures something returns a plain dict of figures; these helpers turn it
into the artefacts people compare across runs and machines.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Converts numpy/JAX scalars and arrays, tuples and paths into plain JSON types.

    NaN and infinities become strings, so that the file stays valid JSON (json.dumps would write
    the non-standard tokens NaN/Infinity).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, figures: dict) -> Path:
    """Writes `figures` as indented JSON, atomically (temp file + rename), creating parents."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(figures), indent=2, sort_keys=False)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text + "\n")
        tmp = f.name
    # Temp files are created 0600; give the report the mode any other file the user writes gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (Linux /proc/cpuinfo, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none (Windows)."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except (AttributeError, OSError):
        return None


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_description() -> dict:
    """What the numbers were measured on, as facts read off the machine; stored next to every figure set.

    Call it once before and once after a measurement (`load_after=machine_description()["load_average"]`)
    so a report shows whether something else ran meanwhile.
    """
    import jax

    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def machine_record(before: dict) -> dict:
    """The machine facts now, with the load average read at `before` (a `machine_description()`)."""
    return {**machine_description(), "load_average_before": before.get("load_average")}


def machine_text(record: dict) -> str:
    """A stored `machine_record` as one line: CPU model, cores, load average before/after, JAX backend."""
    before, after = record.get("load_average_before"), record.get("load_average")
    load = "n/a" if after is None else f"{after[0]:.2f}"
    if before is not None and after is not None:
        load = f"{before[0]:.2f} before, {after[0]:.2f} after"
    return f"{record['cpu']}, {record['cores']} cores, load average {load}, JAX {record['jax']} on {record['backend']}"


def machine_line(before: dict | None = None) -> str:
    """One line of machine facts: CPU model, cores, load average (before -> now), JAX backend."""
    now = machine_description()
    load = now["load_average"]
    shown = "n/a" if load is None else f"{load[0]:.2f}"
    if before is not None and before.get("load_average") is not None and load is not None:
        shown = f"{before['load_average'][0]:.2f} before, {load[0]:.2f} after"
    return f"{now['cpu']}, {now['cores']} cores, load average {shown}, JAX {now['jax']} on {now['backend']}"


def format_value(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(v) for v in row) + " |")
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(str(h))
    for row in rows:
        table.add_row(*(format_value(v) for v in row))
    Console().print(table)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Saves a matplotlib figure as PNG and closes it (the Agg backend needs no display)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def new_figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)
