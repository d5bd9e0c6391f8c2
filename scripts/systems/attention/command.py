"""`frugal bench attention` and the hybrid sparse attention section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.attention.config import PRESETS, AttentionConfig

TOUR_ORDER = 40
HELP = "hybrid sparse attention: dense vs banded time/memory, n up to 32k, vs HF PyTorch Longformer; training runs"
DESCRIPTION = (
    "SALO's hybrid sparse attention (sliding window + global tokens) in JAX: dense vs banded attention "
    "time and XLA-planned memory up to 32k tokens, a whole Longformer self-attention layer against Hugging "
    "Face's PyTorch one and torch's dense SDPA (with the bench extra), then training on built-in data: "
    "Longformer on the evidence task with and without a global CLS token, ViL on 32x32 digits. Writes "
    "attention.{json,md,png} under --outdir."
)


def write_reports(figures: dict, outdir: Path) -> list[Path]:
    from frugal.scripts.report import write_json
    from frugal.scripts.systems.attention.bench import plot
    from frugal.scripts.systems.attention.experiment import markdown

    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "attention.md"
    md.write_text(markdown(figures))
    png = outdir / "attention.png"
    plot(figures, png)
    return [write_json(outdir / "attention.json", figures), md, png]


def run_and_print(config: AttentionConfig) -> dict:
    from frugal.scripts.report import machine_text, print_table
    from frugal.scripts.systems.attention.bench import attention_table, torch_table
    from frugal.scripts.systems.attention.experiment import run
    from frugal.scripts.systems.attention.tasks import tasks_table

    figures = run(config)
    print_table("hybrid attention, dense vs banded", *attention_table(figures))
    if figures["torch_layer"].get("skipped"):
        print(f"PyTorch comparison skipped: {figures['torch_layer']['skipped']}")
    else:
        print_table("self-attention layer with projections vs PyTorch", *torch_table(figures))
    if figures["training"]:
        print_table("training on built-in data", *tasks_table(figures["training"]))
    print(f"machine: {machine_text(figures['machine'])}")
    for path in write_reports(figures, Path(config.outdir)):
        print(f"wrote {path}")
    return figures


def tour_summary(figures: dict) -> list[tuple[str, str]]:
    summary = []
    last = figures["attention"][-1]
    if last.get("speedup"):
        summary.append(
            (
                f"banded vs dense at n={last['seq_len']}",
                f"{last['speedup']:.1f}x (FLOP bound {last['flop_ratio_bound']:.1f}x)",
            )
        )
    layer = figures["torch_layer"]
    if layer.get("rows"):
        r = layer["rows"][-1]
        summary.append(
            (
                f"layer vs HF Longformer at n={r['seq_len']}",
                f"{r['speedup_vs_hf']:.1f}x, max |diff| {r['max_abs_diff_vs_hf']:.1e}",
            )
        )
    for r in figures["training"].get("longformer_evidence", []):
        pattern = "CLS global" if r["use_global"] else "window only"
        summary.append(
            (
                f"Longformer evidence task n={r['seq_len']} accuracy ({pattern})",
                f"{r['test_accuracy']:.2f} (chance {r['chance']:.2f}; loss {r['first_loss']:.2f} -> "
                f"{r['last_loss']:.2f})",
            )
        )
    if "vil" in figures["training"]:
        summary.append(("ViL test accuracy", f"{figures['training']['vil']['test_accuracy']:.2f}"))
    return summary


def tour_section(quick: bool, outdir: Path):
    """The `tour` preset (a small benchmark and the evidence task at n = 128), or `full` with `--full`."""
    from frugal.scripts.systems.attention.bench import plot
    from frugal.scripts.systems.attention.experiment import markdown, run
    from frugal.scripts.tour import TourSection

    config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=str(outdir / "attention"))
    figures = run(config)
    plot(figures, outdir / "attention.png")
    return TourSection(
        title="SALO hybrid sparse attention: banded vs dense, Longformer, ViL",
        figures=figures,
        markdown=markdown(figures, title="").strip(),
        summary=tour_summary(figures),
        plots=["attention.png"],
    )


COMMANDS = [
    config_command(("bench", "attention"), HELP, AttentionConfig, PRESETS, run_and_print, description=DESCRIPTION)
]
