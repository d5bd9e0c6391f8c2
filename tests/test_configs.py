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


@dataclasses.dataclass(frozen=True)
class Moded:
    """A config whose `flag` switch leaves `sizes` and the nested `inner` unread when off."""

    flag: bool = knob(True, "a switch")
    sizes: tuple[int, ...] = knob((1, 2), "sizes")
    count: int = knob(3, "always read")
    inner: Inner = Inner()

    def inactive_fields(self):
        return {} if self.flag else {"sizes": "with --no-flag", "inner": "with --no-flag"}


MODED = check_presets(Moded, {"quick": Moded(), "tour": Moded(), "full": Moded(flag=False)})


def parse_moded(argv):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_flags(parser, Moded, MODED)
    return config_from_flags(parser.parse_args(argv), Moded, MODED)


def test_flags_the_chosen_mode_never_reads_are_refused():
    with pytest.raises(ValueError, match=r"--sizes is not used with --no-flag"):
        parse_moded(["--preset", "quick", "--no-flag", "--sizes", "4"])
    with pytest.raises(ValueError, match=r"--inner-rate is not used with --no-flag"):
        parse_moded(["--inner-rate", "0.3"])  # the full preset has the switch off
    # the same flags are fine where the mode reads them; unrelated flags are fine in either mode
    assert parse_moded(["--preset", "quick", "--sizes", "4"]).sizes == (4,)
    assert parse_moded(["--flag", "--inner-rate", "0.3"]).inner.rate == 0.3
    assert parse_moded(["--count", "5"]).count == 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["bench", "attention", "--no-torch", "--torch-seq-lens", "100"],
            "--torch-seq-lens is not used with --no-torch",
        ),
        (["bench", "attention", "--tasks", "--vil-steps", "3"], "--vil-steps is not used unless --tasks names vil"),
        (["quant", "ant", "--part", "text", "--fp-steps", "3"], "--fp-steps is not used with --part text"),
        (["quant", "ant", "--part", "image", "--extra-8bit", "2"], "--extra-8bit is not used with --part image"),
        (["check-device", "--kernels", "csr_matmul", "--attention-blocks", "64"], "--attention-blocks is not used"),
        (["train", "--checkpoint-every", "5"], "--checkpoint-every is not used without --workdir"),
        (["quant", "aquant", "--dataset", "digits", "--n-train", "10"], "--n-train is not used with --dataset digits"),
        (["quant", "aquant", "--ablation", "--ablation-setting", "W3A3"], "--ablation-setting is not used without"),
        (["skim", "--refine-epochs", "0", "--refine-windows", "9"], "--refine-windows is not used"),
        (["skim", "--timing-examples", "0", "--timing-repeats", "2"], "--timing-repeats is not used"),
        (["gnn", "profile", "--models", "gcn", "--heads", "4"], "--heads is not used unless --models profiles gat"),
        (["gnn", "profile", "--train-steps", "0", "--train-dataset", "cora"], "--train-dataset is not used"),
    ],
)
def test_systems_refuse_flags_their_mode_never_reads(argv, message, capsys, monkeypatch):
    """Before any work: the command exits 2 with one line naming the flag and the setting."""
    from frugal.scripts import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_attention_runs_read_what_their_tasks_need():
    from frugal.scripts.systems.attention.config import AttentionConfig

    assert set(AttentionConfig(tasks=("vil",), workdir="w").inactive_fields()) == {"evidence"}
    assert set(AttentionConfig(tasks=("window_only",), workdir="w").inactive_fields()) == {"vil"}
    assert set(AttentionConfig(tasks=("vil",)).inactive_fields()) == {"evidence", "checkpoint_every"}
    assert set(AttentionConfig(tasks=(), torch=False).inactive_fields()) == {
        "torch_seq_lens",
        "evidence",
        "vil",
        "workdir",
        "checkpoint_every",
    }


def test_a_percent_sign_in_help_or_default_prints_as_is():
    # argparse %-formats help strings; "< 5% undecided" once crashed `--help` with "%u format".
    @dataclasses.dataclass(frozen=True)
    class Percent:
        share: float = knob(0.05, "keeps < 5% undecided")
        label: str = knob("50%", "a label")

    presets = check_presets(Percent, {"quick": Percent(), "tour": Percent(), "full": Percent()})
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Percent, presets)
    text = parser.format_help()
    assert "keeps < 5% undecided" in text and "(default: 50%)" in text
