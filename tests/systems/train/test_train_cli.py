"""`frugal train`: flags derived from TrainConfig, one-line errors, JSON figures, the tour section."""

import dataclasses
import json

import pytest

from frugal.scripts import cli
from frugal.scripts.configs import config_from_flags
from frugal.scripts.systems.train import command
from frugal.scripts.systems.train.config import PRESETS, TrainConfig


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "vgg"], "model='vgg' is not known"),
        (["train", "--activation", "swishy", "--steps", "1"], "activation='swishy' is not known"),
        (["train", "--norm", "instance"], "norm='instance' is not known"),
        (["train", "--dataset", "mnist"], "dataset='mnist' is not known"),
        (["train", "--dataset", "cifar10"], "needs --data-path"),
        (["train", "--dataset", "cifar10", "--data-path", "/nonexistent/cifar"], "does not exist"),
        (["train", "--batch-size", "7", "--devices", "2", "--steps", "1"], "not divisible by the 2 devices"),
        (["train", "--model", "resnet18", "--width", "8"], "applies to the cifar_* models"),
        (["train", "--steps", "-1"], "steps=-1 must be >= 0"),
    ],
)
def test_user_mistakes_end_in_one_line_and_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("frugal: error:") and message in err and "\n" not in err


def test_flags_are_the_config_fields_and_presets_apply():
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--preset", "quick", "--steps", "3", "--lr", "0.01", "--no-progress"])
    config = config_from_flags(args, TrainConfig, PRESETS)
    assert config == dataclasses.replace(PRESETS["quick"], steps=3, learning_rate=0.01, progress=False)
    # no preset: the command's default is the `full` preset, which is TrainConfig()
    assert config_from_flags(parser.parse_args(["train"]), TrainConfig, PRESETS) == TrainConfig() == PRESETS["full"]
    # `none` clears an optional field
    args = parser.parse_args(["train", "--preset", "quick", "--width", "none"])
    assert config_from_flags(args, TrainConfig, PRESETS).width is None
    flags = parser.parse_args(["train"])._config_flags
    assert {f.path for f in flags} == {(f.name,) for f in dataclasses.fields(TrainConfig)}
    assert {f.option for f in flags} >= {"--lr", "--batch-size", "--data-path", "--progress"}
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)


def test_train_command_writes_json(tmp_path):
    out = tmp_path / "f.json"
    code = cli.main(
        [
            "train",
            "--model",
            "cifar_resnet8",
            "--width",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    assert 0.0 <= figures["test_accuracy"] <= 1.0 and figures["config"]["steps"] == 2
    machine = figures["machine"]
    assert machine["cores"] >= 1 and machine["backend"] == "cpu" and "load_average_before" in machine


def test_tour_section_on_the_quick_preset(tmp_path, monkeypatch):
    monkeypatch.setitem(command.PRESETS, "tour", PRESETS["quick"])
    section = command.tour_section(True, tmp_path)
    assert section.figures["config"]["steps"] == PRESETS["quick"].steps
    assert section.figures["config"]["workdir"] == str(tmp_path / "train_digits")
    assert section.figures["checkpoint_dir"] and (tmp_path / section.plots[0]).is_file()
    assert "cores, load average" in section.markdown
    # a second tour starts from scratch, not from the first one's checkpoint
    again = command.tour_section(True, tmp_path)
    assert again.figures["resumed_from_step"] == 0
