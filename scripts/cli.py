"""The `frugal` command line.

Subcommands are discovered, not listed: every module in `frugal.scripts.commands` that defines

    COMMAND = ("bench", "memory")      # its path under `frugal`
    HELP = "one line shown in --help"
    def add_arguments(parser): ...    # its own flags
    def run_command(args) -> dict | None   # returns the figures it measured

becomes `frugal bench memory`. Commands that measure something (MEASURES = True, the default) get
`--json PATH` added, and the figures they return are written there. A module may also define
`tour_section(quick, outdir)` (see `frugal.scripts.tour`) to join `frugal tour`.

User mistakes (bad flags, missing paths, invalid values) end as one `frugal: error: ...` line and
exit status 2; `--debug` (or FRUGAL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from types import ModuleType

GROUP_HELP = {
    "bench": "speed and memory benchmarks (ratios measured side by side in one process)",
    "quant": "quantization experiments (ANT numeric types, AQuant rounding borders)",
    "accel": "accelerator cost model: ANT and SALO designs, sweeps, design search",
    "gnn": "GNN workload characterization: per-stage profiler and comparisons",
}

# Exceptions that mean "the user asked for something invalid"; anything else is a bug and keeps
# its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)


def command_modules() -> list[ModuleType]:
    import frugal.scripts.commands as package

    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"frugal.scripts.commands.{info.name}")
        if hasattr(module, "COMMAND"):
            modules.append(module)
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal",
        description="frugal: efficient deep learning systems as JAX transforms, with experiments "
        "that reproduce their papers' claims on built-in data.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for module in command_modules():
        path = tuple(module.COMMAND)
        where = top
        for depth, name in enumerate(path[:-1]):
            key = " ".join(path[: depth + 1])
            if key not in groups:
                group_parser = where.add_parser(
                    name, help=GROUP_HELP.get(name, name), description=GROUP_HELP.get(name, name)
                )
                groups[key] = group_parser.add_subparsers(dest=f"sub_{depth}", metavar="COMMAND")
                groups[key].required = True
            where = groups[key]
        sub = where.add_parser(path[-1], help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(sub)
        if getattr(module, "MEASURES", True):
            sub.add_argument(
                "--json", metavar="PATH", default=None, help="also write the measured figures to this JSON file"
            )
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("FRUGAL_DEBUG") == "1"
    module = args._module
    try:
        figures = module.run_command(args)
        if getattr(args, "json", None) and figures is not None:
            from frugal.scripts.report import write_json

            path = write_json(args.json, figures)
            print(f"figures written to {path}")
    except USER_ERRORS as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        # ValueError/TypeError/KeyError can also come from a bug, so say how to see the traceback.
        print(f"frugal: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frugal: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
