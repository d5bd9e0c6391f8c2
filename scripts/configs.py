"""Experiment configs as frozen dataclasses with named presets, and command-line flags derived from them.

Every system's `config.py` declares one frozen dataclass (validated in `__post_init__`) and a
`PRESETS` dict with at least `quick` (tests: seconds), `tour` (its `frugal tour` section) and `full`
(the paper-sized run, the command's default). A command never keeps its own flag-to-field table:
`add_config_flags` writes one flag per field from the field's type and help text, and
`config_from_flags` builds the config from the chosen preset plus the flags the user gave.

    @dataclasses.dataclass(frozen=True)
    class SaloConfig:
        cpu_repeats: int = knob(3, "timed CPU runs per workload (median)")
        gpus: tuple[str, ...] = knob(("V100", "A100"), "GPUs for the roofline baseline", choices=GPUS)

gives `--cpu-repeats N` and `--gpus NAME [NAME ...]`. Types understood: int, float, str, Path,
bool (`--x` / `--no-x`), `X | None` (the word `none` gives None), `tuple[X, ...]` (one or more values,
`--x` with no value gives an empty tuple when `allow_empty`) and `Literal[...]` (choices). A field
whose type is itself a config dataclass is flattened with its name as prefix (`--search-steps`).
The idea follows levanter's dataclass-generated CLI (github.com/stanford-crfm/levanter).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

PRESET_NAMES = ("quick", "tour", "full")


def knob(default: Any, help: str, *, choices=None, flag: str | None = None, cli: bool = True, allow_empty=False):
    """A config field with its help text (shown by `--help`) and optional allowed values.

    `flag` overrides the flag name (default: the field name with dashes); `cli=False` keeps a field
    out of the command line (set only from Python or presets); `allow_empty` lets a tuple flag take
    no values. Tuples are immutable, so they are safe defaults.
    """
    metadata = {"help": help, "choices": choices, "flag": flag, "cli": cli, "allow_empty": allow_empty}
    return dataclasses.field(default=default, metadata=metadata)


def check_presets(cls: type, presets: dict[str, Any]) -> dict[str, Any]:
    """Validates a system's PRESETS dict (every name present, every value a `cls`); returns it."""
    missing = [n for n in PRESET_NAMES if n not in presets]
    if missing:
        raise ValueError(f"{cls.__name__} presets lack {missing}; every system defines {list(PRESET_NAMES)}")
    for name, value in presets.items():
        if not isinstance(value, cls):
            raise TypeError(f"preset {name!r} of {cls.__name__} is a {type(value).__name__}")
    return presets


def _unwrap_optional(tp) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _scalar_parser(tp, name: str):
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if tp is Path:
        return Path
    if typing.get_origin(tp) is Literal:
        values = typing.get_args(tp)
        kind = type(values[0])
        return kind
    raise TypeError(f"configs: field {name!r} has type {tp!r}, which has no command-line form; mark it cli=False")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional(parse):
    def convert(text: str):
        return None if text.lower() == "none" else parse(text)

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


@dataclasses.dataclass(frozen=True)
class _Flag:
    path: tuple[str, ...]  # field names from the top config down to the leaf
    option: str  # e.g. --search-steps


def _walk(cls, prefix: tuple[str, ...], flag_prefix: str):
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init or not field.metadata.get("cli", True):
            continue
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, prefix + (field.name,), f"{flag_prefix}{field.name.replace('_', '-')}-")
            continue
        flag = field.metadata.get("flag") or f"{flag_prefix}{field.name.replace('_', '-')}"
        yield field, tp, prefix + (field.name,), flag


def _get(config, path):
    for name in path:
        config = getattr(config, name)
    return config


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    presets: dict[str, Any] | None = None,
    *,
    default_preset: str = "full",
    exclude: tuple[str, ...] = (),
) -> list[_Flag]:
    """Adds `--preset` (when presets are given) and one flag per field of `cls` to `parser`.

    Flags are stored only when given (argparse.SUPPRESS), so `config_from_flags` can tell a user's
    value from the preset's. Help shows the value of `default_preset`. Fields named in `exclude`
    (top-level names, or dotted paths into nested configs) get no flag: a command that shares a
    config with others leaves out what it never reads, so giving such a flag is refused rather
    than silently ignored.
    """
    base = presets[default_preset] if presets else cls()
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=default_preset,
            help=f"starting values for every option below (default: {default_preset}); "
            "options given on the command line replace the preset's",
        )
    flags = []
    for field, tp, path, flag in _walk(cls, (), ""):
        if any(".".join(path) == e or ".".join(path).startswith(e + ".") for e in exclude):
            continue
        dest = "cfg__" + "__".join(path)
        # argparse %-formats help strings: a literal "%" in a knob's help ("< 5% undecided") must be doubled.
        help_text = (field.metadata.get("help") or field.name.replace("_", " ")).replace("%", "%%")
        default = _get(base, path)
        inner, optional = _unwrap_optional(tp)
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        choices = field.metadata.get("choices")
        if inner is bool and not optional:
            parser.add_argument(
                f"--{flag}",
                action=argparse.BooleanOptionalAction,
                help=f"{help_text} (default: {'on' if default else 'off'})",
                **kwargs,
            )
            flags.append(_Flag(path, f"--{flag}"))
            continue
        if typing.get_origin(inner) is tuple:
            element = typing.get_args(inner)[0]
            parse = _scalar_parser(element, field.name)
            kwargs["nargs"] = "*" if field.metadata.get("allow_empty") else "+"
            if typing.get_origin(element) is Literal:
                choices = choices or typing.get_args(element)
            shown = " ".join(str(v) for v in default) if default else "none"
        else:
            parse = _scalar_parser(inner, field.name)
            if typing.get_origin(inner) is Literal:
                choices = choices or typing.get_args(inner)
            shown = "none" if default is None else str(default)
        kwargs["type"] = _optional(parse) if optional else parse
        if choices is not None:
            kwargs["choices"] = list(choices) + ([None] if optional else [])
        kwargs["metavar"] = field.name.upper() if choices is None else "{" + ",".join(map(str, choices)) + "}"
        parser.add_argument(f"--{flag}", help=f"{help_text} (default: {shown.replace('%', '%%')})", **kwargs)
        flags.append(_Flag(path, f"--{flag}"))
    parser.set_defaults(_config_flags=flags)
    return flags


def _apply(config, overrides: dict):
    """One `dataclasses.replace` per dataclass level, so `__post_init__` sees every given value at once."""
    changes = {}
    for name, value in overrides.items():
        changes[name] = _apply(getattr(config, name), value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **changes)


def config_from_flags(args: argparse.Namespace, cls: type, presets: dict[str, Any] | None = None) -> Any:
    """The config for parsed `args`: the chosen preset (or `cls()`) with every given flag applied.

    A value the config rejects in `__post_init__` surfaces as a ValueError that also names the flags
    the user gave.
    """
    preset = getattr(args, "preset", None)
    config = presets[preset] if presets and preset else (presets["full"] if presets else cls())
    overrides: dict = {}
    options = []
    for flag in getattr(args, "_config_flags", []):
        dest = "cfg__" + "__".join(flag.path)
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        node = overrides
        for name in flag.path[:-1]:
            node = node.setdefault(name, {})
        node[flag.path[-1]] = tuple(value) if isinstance(value, list) else value
        options.append(flag.option)
    if not overrides:
        return config
    try:
        config = _apply(config, overrides)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{err} (options given: {' '.join(options)})") from None
    check_inactive_flags(config, args)
    return config


def check_inactive_flags(config, args: argparse.Namespace) -> None:
    """Refuses a given flag that the chosen mode never reads.

    A config may define `inactive_fields(self) -> {field path: reason}`: the fields (top-level names,
    or dotted paths; a nested config's name covers all its fields) that the config's own settings
    leave unread, e.g. `--torch-seq-lens` with `--no-torch`. Giving one of them is then an error that
    names the flag and why, instead of a silent no-op.
    """
    inactive = getattr(config, "inactive_fields", None)
    if inactive is None:
        return
    reasons = inactive()
    for flag in getattr(args, "_config_flags", []):
        if not hasattr(args, "cfg__" + "__".join(flag.path)):
            continue
        dotted = ".".join(flag.path)
        for field, reason in reasons.items():
            if dotted == field or dotted.startswith(field + "."):
                raise ValueError(f"{flag.option} is not used {reason}; drop it or change that setting")


def preset_help(presets: dict[str, Any]) -> str:
    """One line per preset naming the fields that differ from `full`, for a command's description."""
    full = presets["full"]
    lines = []
    for name, value in presets.items():
        if name == "full":
            continue
        diff = [
            f"{f.name}={getattr(value, f.name)!r}"
            for f in dataclasses.fields(value)
            if getattr(value, f.name) != getattr(full, f.name)
        ]
        lines.append(f"{name}: " + (", ".join(diff) if diff else "same as full"))
    return "; ".join(lines)
