"""frugal bench attention: SALO hybrid sparse attention, dense vs banded (vs PyTorch Longformer), time and memory."""

from __future__ import annotations

from pathlib import Path

COMMAND = ("bench", "attention")
HELP = "hybrid sparse attention: dense vs banded time/memory, n up to 32k, vs HF PyTorch Longformer"
TOUR_ORDER = 40


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes (n 512..2048, window 128, 4 heads)")
    parser.add_argument(
        "--seq-lens", type=_ints, default=None, help="comma-separated sequence lengths (default 1024,...,32768)"
    )
    parser.add_argument("--window", type=int, default=None, help="window (Longformer convention; default 512)")
    parser.add_argument(
        "--globals",
        dest="num_globals",
        type=_ints,
        default=None,
        help="comma-separated global-token counts (default 1,64)",
    )
    parser.add_argument(
        "--torch-seq-lens",
        type=_ints,
        default=None,
        help="sequence lengths for the PyTorch comparison (default 4096,8192,16384)",
    )
    parser.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch comparison")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per point (minimum reported)")
    parser.add_argument(
        "--dense-limit-gib",
        type=float,
        default=None,
        help="run dense only where XLA plans at most this much memory (default 10)",
    )
    parser.add_argument("--outdir", default="reports/attention", help="where attention.{json,md,png} go")


def config_from_args(args):
    import dataclasses

    from frugal.scripts.attention_bench import AttentionBenchConfig

    config = AttentionBenchConfig.quick() if args.quick else AttentionBenchConfig()
    overrides = {
        "seq_lens": args.seq_lens,
        "window": args.window,
        "num_globals": args.num_globals,
        "torch_seq_lens": args.torch_seq_lens,
        "repeats": args.repeats,
        "dense_memory_limit_gib": args.dense_limit_gib,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, torch=args.torch, **overrides)


def _write(figures: dict, outdir: Path) -> list[Path]:
    from frugal.scripts.attention_bench import markdown_report, plot
    from frugal.scripts.report import write_json

    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "attention.md"
    md.write_text(markdown_report(figures))
    png = outdir / "attention.png"
    plot(figures, png)
    return [write_json(outdir / "attention.json", figures), md, png]


def _progress(row: dict) -> None:
    from rich.console import Console

    text = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if not k.endswith("bytes")
    )
    Console().print(f"[dim]{text}[/dim]")


def run_command(args) -> dict:
    from frugal.scripts.attention_bench import attention_table, run, torch_table
    from frugal.scripts.report import print_table

    figures = run(config_from_args(args), progress=_progress)
    note = "2-core CPU shared with other agents: times are noisy"
    print_table(f"hybrid attention, dense vs banded ({note})", *attention_table(figures))
    if figures["torch_layer"].get("skipped"):
        print(f"PyTorch comparison skipped: {figures['torch_layer']['skipped']}")
    else:
        print_table("self-attention layer with projections vs PyTorch", *torch_table(figures))
    for path in _write(figures, Path(args.outdir)):
        print(f"wrote {path}")
    return figures


def tour_section(quick: bool, outdir: Path):
    """The benchmark at small sizes, plus a tiny Longformer training run on the evidence task."""
    import dataclasses

    from frugal.scripts.attention_bench import AttentionBenchConfig, attention_table, plot, run, torch_table
    from frugal.scripts.report import markdown_table
    from frugal.scripts.tour import TourSection

    config = (
        AttentionBenchConfig.quick()
        if quick
        else dataclasses.replace(
            AttentionBenchConfig(), seq_lens=(1024, 2048, 4096, 8192), num_globals=(1,), torch_seq_lens=(4096,)
        )
    )
    if quick:
        # torch's import alone costs seconds; the quick tour leaves the PyTorch comparison to --full
        config = dataclasses.replace(config, seq_lens=(512, 2048), torch=False, repeats=1)
    figures = {"bench": run(config)}
    plot(figures["bench"], outdir / "bench_attention.png")
    markdown = ["Attention alone (q, k, v given):", "", markdown_table(*attention_table(figures["bench"]))]
    layer = figures["bench"]["torch_layer"]
    if layer.get("skipped"):
        markdown += ["", f"PyTorch comparison skipped: {layer['skipped']}"]
    else:
        markdown += ["", "Layer with projections vs PyTorch:", "", markdown_table(*torch_table(figures["bench"]))]
    summary = []
    last = figures["bench"]["attention"][-1]
    if last.get("speedup"):
        summary.append(
            (
                f"banded vs dense at n={last['seq_len']}",
                f"{last['speedup']:.1f}x (FLOP bound {last['flop_ratio_bound']:.1f}x)",
            )
        )
    if layer.get("rows"):
        r = layer["rows"][-1]
        summary.append(
            (
                f"layer vs HF Longformer at n={r['seq_len']}",
                f"{r['speedup_vs_hf']:.1f}x, max |diff| {r['max_abs_diff_vs_hf']:.1e}",
            )
        )
    try:
        from frugal.scripts.attention_tasks import tour_training

        training = tour_training(quick)
        figures["training"] = training
        markdown += ["", training["markdown"]]
        summary += training["summary"]
    except ImportError:
        pass
    return TourSection(
        title="SALO hybrid sparse attention: banded vs dense, Longformer",
        figures=figures,
        markdown="\n".join(markdown),
        summary=summary,
        plots=["bench_attention.png"],
    )
