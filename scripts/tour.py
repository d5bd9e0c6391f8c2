"""`frugal tour`: every system's section, run on built-in data, gathered into one report.

A section is the `command` module of a system home (`frugal.scripts.systems.<name>.command`,
section name `<name>`) that defines

    TOUR_ORDER = 10                       # sections run in ascending order
    def tour_section(quick: bool, outdir: Path) -> TourSection

`quick` is the default setting (the whole tour in at most five minutes on a 2-core CPU); `--full`
runs larger settings. A section writes its plots into `outdir` and returns its figures; the tour
writes `report.md`, `summary.json` (every section's figures) and one `<section>.json` each.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path
from typing import Any

from frugal.scripts import report


@dataclasses.dataclass
class TourSection:
    title: str
    figures: dict[str, Any]
    markdown: str
    summary: list[tuple[str, str]]  # (what, value) rows for the tour's summary table
    plots: list[str] = dataclasses.field(default_factory=list)  # file names inside outdir


def tour_modules() -> list:
    from frugal.scripts.cli import system_modules

    modules = [m for m in system_modules() if hasattr(m, "tour_section")]
    return sorted(modules, key=lambda m: (getattr(m, "TOUR_ORDER", 100), m.__name__))


def section_key(module) -> str:
    """The section's name: its system folder (`frugal.scripts.systems.<name>.command` -> name)."""
    parts = module.__name__.split(".")
    return parts[-2] if parts[-1] == "command" else parts[-1]


def run_tour(*, quick: bool = True, outdir: str | Path = "reports/tour", only: list[str] | None = None) -> dict:
    """Runs the sections (all, or `only` these) and writes the report.

    With `only`, the sections that ran replace their own entries in an existing `summary.json` /
    `report.md` of the same mode in `outdir`; the other sections' results stay as they were.
    """
    from rich.console import Console

    console = Console()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    modules = tour_modules()
    order = [section_key(m) for m in modules]
    if only:
        unknown = sorted(set(only) - set(order))
        if unknown:
            raise ValueError(f"--only: unknown section(s) {unknown}; available: {order}")
        modules = [m for m in modules if section_key(m) in only]
    mode = "quick" if quick else "full"
    previous = _previous_sections(outdir, mode) if only else {}
    machine_before = report.machine_description()

    results: dict[str, dict] = {}
    started = time.perf_counter()
    for index, module in enumerate(modules, 1):
        key = section_key(module)
        console.rule(f"[bold]tour {index}/{len(modules)}: {key}")
        t0 = time.perf_counter()
        try:
            section = module.tour_section(quick, outdir)
            error = None
        except Exception as err:  # one failing section must not hide the others' results
            section, error = None, f"{type(err).__name__}: {err}"
            console.print(f"[red]section {key} failed[/red]\n{traceback.format_exc()}")
        results[key] = _record(key, section, time.perf_counter() - t0, error)
        if section:
            report.write_json(outdir / f"{key}.json", section.figures)

    total = time.perf_counter() - started
    merged = {key: results.get(key) or previous.get(key) for key in order if key in results or key in previous}
    summary = {
        "mode": mode,
        "total_seconds": total,
        "machine": report.machine_record(machine_before),
        "sections": merged,
    }
    report.write_json(outdir / "summary.json", summary)
    (outdir / "report.md").write_text(_markdown(summary, ran=set(results)))

    rows = _summary_rows({k: results[k] for k in order if k in results})
    report.print_table(f"frugal tour ({mode}, {total:.0f} s)", ["section", "what", "value", "seconds"], rows)
    console.print(f"report: {outdir / 'report.md'}  figures: {outdir / 'summary.json'}")
    return summary


def _record(key: str, section: TourSection | None, seconds: float, error: str | None) -> dict:
    return {
        "title": section.title if section else key,
        "seconds": seconds,
        "error": error,
        "figures": section.figures if section else None,
        "summary": [list(row) for row in (section.summary or [("done", "")])] if section else [],
        "markdown": section.markdown.strip() if section else "",
        "plots": list(section.plots) if section else [],
    }


def _previous_sections(outdir: Path, mode: str) -> dict:
    """Sections of an earlier tour of the same mode in `outdir` (none when absent or unreadable)."""
    path = outdir / "summary.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("mode") != mode or not isinstance(old.get("sections"), dict):
        return {}
    return {k: v for k, v in old["sections"].items() if isinstance(v, dict) and "markdown" in v}


def _summary_rows(sections: dict) -> list[tuple]:
    rows = []
    for key, entry in sections.items():
        seconds = f"{entry['seconds']:.1f}"
        if entry["error"]:
            rows.append((key, "FAILED", entry["error"], seconds))
            continue
        for i, (what, value) in enumerate(entry["summary"] or [("done", "")]):
            rows.append((key if i == 0 else "", what, value, seconds if i == 0 else ""))
    return rows


def _markdown(summary: dict, ran: set[str]) -> str:
    kept = [k for k in summary["sections"] if k not in ran]
    lines = [
        "# frugal tour",
        "",
        f"Mode: {summary['mode']}; this run {summary['total_seconds']:.1f} s "
        f"({', '.join(sorted(ran)) or 'no sections'}); machine: {report.machine_text(summary['machine'])}.",
    ]
    if kept:
        lines += ["", f"Kept from the earlier tour in this folder: {', '.join(kept)}."]
    lines += [
        "",
        "## Summary",
        "",
        report.markdown_table(["section", "what", "value", "seconds"], _summary_rows(summary["sections"])),
    ]
    for entry in summary["sections"].values():
        lines += ["", f"## {entry['title']}", ""]
        if entry["error"]:
            lines.append(f"Failed: `{entry['error']}`")
            continue
        lines.append(entry["markdown"])
        for plot in entry["plots"]:
            lines += ["", f"![{plot}]({plot})"]
    return "\n".join(lines) + "\n"


def _add_arguments(parser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="quick",
        action="store_true",
        default=True,
        help="each system's `tour` preset: about five minutes in all on a 2-core CPU (default)",
    )
    mode.add_argument(
        "--full",
        dest="quick",
        action="store_false",
        help="each system's `full` preset (the paper-sized runs: hours on a CPU)",
    )
    parser.add_argument("--outdir", default="reports/tour", help="where the report goes (default: reports/tour)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SECTION",
        default=None,
        help="run only these sections: " + ", ".join(_section_names()),
    )


def _section_names() -> list[str]:
    return [section_key(m) for m in tour_modules()]


def _run(args) -> dict:
    return run_tour(quick=args.quick, outdir=args.outdir, only=args.only)


def _command():
    from frugal.scripts.cli import Command

    return Command(
        ("tour",), "run every system on built-in data; writes reports/tour/ (Markdown, PNG, JSON)", _run, _add_arguments
    )


def __getattr__(name):  # COMMAND is built on first use: cli imports this module, and it imports cli
    if name == "COMMAND":
        return _command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
