"""`frugal check-device`: compile, check and time every kernel on this machine's GPU or TPU."""

from __future__ import annotations

from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.kernels.config import PRESETS, KernelCheckConfig


def run_and_print(config: KernelCheckConfig) -> dict:
    from frugal.scripts.report import write_json
    from frugal.scripts.systems.kernels.experiment import markdown, run

    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    partial = outdir / "check_device.partial.json"

    def on_row(row, rows):
        status = "ok" if row["ok"] else f"FAILED {row.get('error', '')}".strip()
        print(f"[{len(rows)}] {row['kernel']}: {row['case']}: {status} ({row.get('wall_s', 0):.1f} s)", flush=True)
        write_json(partial, {"rows": rows, "complete": False})

    figures = run(config, on_row=on_row)
    partial.unlink(missing_ok=True)
    text = markdown(figures)
    print(text)
    (outdir / "check_device.md").write_text(text)
    print(f"wrote {write_json(outdir / 'check_device.json', figures)}")
    if figures["ok"] is False:
        raise RuntimeError("a kernel disagrees with its reference on this device (see the table)")
    return figures


COMMANDS = [
    config_command(
        ("check-device",),
        "compile every kernel on this GPU/TPU, compare it with its reference, time it beside the XLA path",
        KernelCheckConfig,
        PRESETS,
        run_and_print,
    )
]
