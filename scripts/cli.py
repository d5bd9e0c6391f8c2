"""The `frugal` command line.

Commands are discovered, not listed: every system home `frugal.scripts.systems.<name>` has a
`command` module that defines

    COMMANDS = [Command(path=("accel", "salo"), help="one line shown in --help",
                        add_arguments=..., run=...)]   # usually made by `config_command`
    TOUR_ORDER = 50                                      # optional: joins `frugal tour`
    def tour_section(quick: bool, outdir: Path) -> TourSection

and `frugal accel salo` runs it. `config_command` derives a command's flags from its system's
config dataclass and presets (`frugal.scripts.configs`), so no command keeps a flag table of its
own. Commands that measure something (`measures=True`, the default) get `--json PATH` added, and
the figures they return are written there.

User mistakes (bad flags, missing paths, invalid values) end as one `frugal: error: ...` line and
exit status 2; `--debug` (or FRUGAL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("frugal-jax")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


__version__ = _version()


@dataclasses.dataclass(frozen=True)
class Command:
    """One `frugal ...` command: its path, help, flags and what runs it."""

    path: tuple[str, ...]
    help: str
    run: Callable[[argparse.Namespace], dict | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str | None = None
    measures: bool = True


def config_command(
    path: tuple[str, ...],
    help: str,
    config_cls: type,
    presets: dict[str, Any],
    run: Callable[[Any], dict | None],
    *,
    description: str | None = None,
    default_preset: str = "full",
    measures: bool = True,
    unused_fields: tuple[str, ...] = (),
) -> Command:
    """A command whose flags are the fields of `config_cls`; `run(config)` does the work.

    `unused_fields`: fields this command never reads (when several commands share one config);
    they get no flag, so passing one is an error instead of a silent no-op.
    """
    from frugal.scripts import configs

    def add_arguments(parser):
        configs.add_config_flags(parser, config_cls, presets, default_preset=default_preset, exclude=unused_fields)

    def run_args(args):
        config = configs.config_from_flags(args, config_cls, presets)
        for name in OUTPUT_FOLDER_FIELDS:
            value = getattr(config, name, None)
            if isinstance(value, (str, os.PathLike)):
                check_output_folder(value, f"--{name.replace('_', '-')}")
        return run(config)

    return Command(tuple(path), help, run_args, add_arguments, description, measures)


GROUP_HELP = {
    "bench": "speed and memory benchmarks (ratios measured side by side in one process)",
    "quant": "quantization experiments (ANT numeric types, AQuant rounding borders)",
    "accel": "accelerator cost model: ANT and SALO designs, sweeps, design search",
    "gnn": "GNN workload characterization: per-stage profiler and comparisons",
    "ctt": "CTT-Net: post-operative visual acuity from two OCT views (data, train, cross-validation)",
    "ganfp": "GAN-fingerprint augmentation: detectors of unseen generators (zoo, train, eval)",
    "lead": "LEAD: layer-wise score-distribution distillation for dense retrieval (data, eval, distill)",
}

# Exceptions that mean "the user asked for something invalid"; anything else is a bug and keeps
# its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)


# Config fields that name a folder a command writes into: checked before any work starts.
OUTPUT_FOLDER_FIELDS = ("outdir", "workdir", "cache_dir")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_output_folder(path, option: str, shown=None) -> None:
    """Refuses a folder that cannot be created or written (a file in the way, no permission)."""
    target = Path(path).expanduser()
    path = path if shown is None else shown
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {path}: {target} is a file, not a folder")
    ancestor = _existing_ancestor(target)
    if not ancestor.is_dir():
        raise ValueError(f"{option} {path}: {ancestor} is a file, so the folder cannot be created under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: {ancestor} is not writable")


def check_output_file(path, option: str) -> None:
    """Refuses a file path that cannot be written (a folder there, a file where a folder must be)."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"{option} {path}: that is a folder; give a file name")
    check_output_folder(target.parent, option, shown=path)


def system_modules() -> list[ModuleType]:
    """The `command` module of every system home, in name order."""
    import frugal.scripts.systems as package

    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"frugal.scripts.systems.{info.name}.command")
        except ModuleNotFoundError as err:
            if err.name != f"frugal.scripts.systems.{info.name}.command":
                raise
            continue
        modules.append(module)
    return modules


def commands() -> list[Command]:
    """Every command: the systems' own, then the tour."""
    from frugal.scripts import tour

    found = [command for module in system_modules() for command in getattr(module, "COMMANDS", [])]
    return found + [tour.COMMAND]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal",
        description="frugal: efficient deep learning systems as JAX transforms, with experiments "
        "that reproduce their papers' claims on built-in data.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"frugal {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    top.required = True
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in commands():
        path = command.path
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
        sub = where.add_parser(path[-1], help=command.help, description=command.description or command.help)
        command.add_arguments(sub)
        if command.measures:
            sub.add_argument(
                "--json", metavar="PATH", default=None, help="also write the measured figures to this JSON file"
            )
        sub.set_defaults(_command=command)
    return parser


def _exit_interrupted(signum=None, frame=None):
    """Ctrl-C: one line and status 130. os._exit skips interpreter teardown, where XLA's worker
    threads can otherwise crash the process after the interrupt."""
    # On a line of its own: a progress bar (or the terminal's "^C") leaves the cursor mid-line.
    print("\nfrugal: interrupted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    # Ctrl-C exits from the signal handler itself, at the next Python instruction of the main thread,
    # so no library code between the signal and `except KeyboardInterrupt` can catch or lose it (in
    # CI a `frugal train` was still running 300 s after its SIGINT). Only where SIGINT has its default
    # handler (an ignored SIGINT, e.g. under nohup, stays ignored); restored for in-process callers.
    previous = None
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous = signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _exit_interrupted()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("FRUGAL_DEBUG") == "1"
    command = args._command
    try:
        if getattr(args, "json", None):
            check_output_file(args.json, "--json")
        figures = command.run(args)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
