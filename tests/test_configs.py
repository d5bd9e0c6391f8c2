"""Flags derived from config dataclasses: every supported field type, presets, nested configs, errors."""

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from frugal.scripts.configs import add_config_flags, check_presets, config_from_flags, knob


@dataclasses.dataclass(frozen=True)
class Inner:
    steps: int = knob(5, "inner steps")
    rate: float = knob(0.1, "inner rate")


@dataclasses.dataclass(frozen=True)
class Example:
    count: int = knob(3, "a count")
    ratio: float = knob(0.5, "a ratio")
    name: str = knob("a", "a name", choices=("a", "b"))
    mode: Literal["x", "y"] = knob("x", "a mode")
    flag: bool = knob(True, "a switch")
    width: int | None = knob(None, "optional width")
    path: Path = knob(Path("out"), "a path")
    sizes: tuple[int, ...] = knob((1, 2), "sizes")
    words: tuple[str, ...] = knob(("p",), "words", allow_empty=True)
    inner: Inner = Inner()
    hidden: int = knob(7, "not on the command line", cli=False)
    renamed: int = knob(1, "custom flag", flag="other-name")

    def __post_init__(self):
        if self.count < 0:
            raise ValueError(f"count={self.count} must be >= 0")
        if self.inner.steps > 100 and self.count == 0:
            raise ValueError("count=0 cannot go with inner.steps > 100")


PRESETS = check_presets(
    Example, {"quick": Example(count=1, inner=Inner(steps=1)), "tour": Example(count=2), "full": Example()}
)


def parse(argv, presets=PRESETS):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_flags(parser, Example, presets)
    return config_from_flags(parser.parse_args(argv), Example, presets)


def test_defaults_are_the_full_preset_and_presets_are_starting_points():
    assert parse([]) == Example()
    assert parse(["--preset", "quick"]) == PRESETS["quick"]
    assert parse(["--preset", "quick", "--count", "9"]) == dataclasses.replace(PRESETS["quick"], count=9)


def test_every_field_type_parses():
    config = parse(
        [
            "--count",
            "4",
            "--ratio",
            "0.25",
            "--name",
            "b",
            "--mode",
            "y",
            "--no-flag",
            "--width",
            "12",
            "--path",
            "p/q",
            "--sizes",
            "3",
            "4",
            "5",
            "--words",
            "--inner-steps",
            "8",
            "--inner-rate",
            "0.5",
            "--other-name",
            "6",
        ]
    )
    assert config == Example(
        count=4,
        ratio=0.25,
        name="b",
        mode="y",
        flag=False,
        width=12,
        path=Path("p/q"),
        sizes=(3, 4, 5),
        words=(),
        inner=Inner(steps=8, rate=0.5),
        renamed=6,
    )
    assert parse(["--width", "none"]).width is None
    assert parse(["--flag"]).flag is True


def test_bad_values_and_unknown_flags_are_refused():
    with pytest.raises(argparse.ArgumentError):
        parse(["--name", "c"])  # not among the choices
    with pytest.raises(argparse.ArgumentError):
        parse(["--count", "many"])
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parse(["--hidden", "3"])  # cli=False: no flag
    with pytest.raises(ValueError, match=r"count=-1 must be >= 0 \(options given: --count\)"):
        parse(["--count", "-1"])


def test_cross_field_checks_see_every_given_value_at_once():
    """Two flags that are only valid together must not fail on an intermediate half-applied config."""
    config = parse(["--inner-steps", "200", "--count", "1"])
    assert config.inner.steps == 200 and config.count == 1
    with pytest.raises(ValueError, match="inner.steps > 100"):
        parse(["--inner-steps", "200", "--count", "0"])


def test_presets_must_name_quick_tour_and_full():
    with pytest.raises(ValueError, match="lack"):
        check_presets(Example, {"quick": Example()})
    with pytest.raises(TypeError, match="preset 'tour'"):
        check_presets(Example, {"quick": Example(), "tour": Inner(), "full": Example()})


def test_excluded_fields_get_no_flag_and_keep_the_presets_value():
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_flags(parser, Example, PRESETS, exclude=("count", "inner.rate"))
    options = {a for action in parser._actions for a in action.option_strings}
    assert "--count" not in options and "--inner-rate" not in options
    assert {"--ratio", "--inner-steps"} <= options
    config = config_from_flags(parser.parse_args(["--preset", "quick", "--inner-steps", "3"]), Example, PRESETS)
    assert config.count == 1 and config.inner.rate == 0.1 and config.inner.steps == 3
    with pytest.raises((argparse.ArgumentError, SystemExit)):
        parser.parse_args(["--count", "2"])
