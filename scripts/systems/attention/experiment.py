"""`run(AttentionConfig) -> figures`: the hybrid attention benchmark (`bench.run_bench`) and the
training runs on built-in data (`tasks.run_tasks`), with the machine they ran on."""

from __future__ import annotations

import dataclasses
import json
import time

from frugal.scripts.report import machine_text
from frugal.scripts.systems.attention.bench import attention_table, run_bench, torch_table
from frugal.scripts.systems.attention.config import AttentionConfig
from frugal.scripts.systems.attention.tasks import run_tasks, tasks_table


def _progress_line(row: dict) -> None:
    from rich.console import Console

    text = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if not k.endswith("bytes")
    )
    Console().print(f"[dim]{text}[/dim]")


def run(config: AttentionConfig) -> dict:
    """Figures: `attention` (dense vs banded rows), `torch_layer` (vs PyTorch, or why skipped),
    `checks`, `training` (the runs `config.tasks` names), `machine` and `seconds`."""
    from frugal.scripts.report import machine_description, machine_record

    start = time.perf_counter()
    before = machine_description()
    figures = {"config": dataclasses.asdict(config)}
    figures.update(run_bench(config, progress=_progress_line if config.progress else None))
    figures["training"] = run_tasks(config)
    figures["machine"] = machine_record(before)
    figures["seconds"] = time.perf_counter() - start
    return figures


def markdown(figures: dict, title: str = "# Hybrid sparse attention") -> str:
    """The Markdown report: the benchmark tables, the PyTorch comparison, the training runs, checks."""
    from frugal.scripts.report import markdown_table, to_jsonable

    cfg = figures["config"]
    lines = [
        title,
        "",
        f"Window {cfg['window']} (inclusive, {cfg['window'] // 2} keys on each side), {cfg['heads']} heads x "
        f"{cfg['head_dim']}, batch 1, float32, forward; minimum of {cfg['repeats']} runs. Memory is what XLA "
        f"plans (arguments + outputs + temporaries). Machine: {machine_text(figures['machine'])}; "
        f"{figures['seconds']:.0f} s in all.",
        "",
        "## Attention (q, k, v given)",
        "",
        markdown_table(*attention_table(figures)),
        "",
        "## Self-attention layer with projections vs PyTorch (1 global token)",
        "",
    ]
    layer = figures["torch_layer"]
    if layer.get("skipped"):
        lines.append(f"skipped: {layer['skipped']}")
    else:
        lines += [
            f"torch {layer['torch_version']} with {layer['threads']} threads, XLA with its default pool "
            f"(one thread per core, {layer.get('xla_threads', '?')}); interleaved rounds, minimum of "
            f"{cfg['repeats']}. 1-minute load average {layer['load_average_before']:.2f} before, "
            f"{layer['load_average_after']:.2f} after.",
            "",
            markdown_table(*torch_table(figures)),
        ]
    if figures["training"]:
        lines += ["", "## Training on built-in data", "", markdown_table(*tasks_table(figures["training"]))]
    lines += ["", "## Checks", "", "```", json.dumps(to_jsonable(figures["checks"]), indent=2), "```"]
    return "\n".join(lines) + "\n"


__all__ = ["markdown", "run"]
