"""The command line: discovery, help, one-line errors, the tour's report files."""

import json
import subprocess
import types
from pathlib import Path

import pytest

from frugal.scripts import cli, tour

REPO = Path(__file__).resolve().parents[1]


def test_console_script_help_lists_subcommands():
    out = subprocess.run(["frugal", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for name in ("tour", "train"):
        assert name in out.stdout


def test_every_command_and_group_has_help(capsys):
    parser = cli.build_parser()
    paths = {tuple(m.COMMAND) for m in cli.command_modules()}
    for path in paths:
        for depth in range(1, len(path) + 1):
            with pytest.raises(SystemExit) as exit_:
                parser.parse_args(list(path[:depth]) + ["--help"])
            assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "vgg"], "model='vgg' is not known"),
        (["train", "--activation", "swishy", "--steps", "1"], "activation='swishy' is not known"),
        (["train", "--dataset", "cifar10"], "needs --data-path"),
        (["train", "--dataset", "cifar10", "--data-path", "/nonexistent/cifar"], "does not exist"),
        (["train", "--batch-size", "7", "--devices", "2", "--steps", "1"], "not divisible by the 2 devices"),
        (["tour", "--only", "nosuchsection"], "unknown section"),
    ],
)
def test_user_mistakes_end_in_one_line_and_status_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("frugal: error:") and message in err and "\n" not in err


def test_tour_writes_report_summary_and_survives_a_failing_section(tmp_path, monkeypatch):
    def good(quick, outdir):
        assert quick is True
        return tour.TourSection("Good", {"value": 1.5}, "body", [("value", "1.5")], [])

    def bad(quick, outdir):
        raise RuntimeError("boom")

    fake = [
        types.SimpleNamespace(__name__="frugal.scripts.commands.good", tour_section=good, TOUR_ORDER=1),
        types.SimpleNamespace(__name__="frugal.scripts.commands.bad", tour_section=bad, TOUR_ORDER=2),
    ]
    monkeypatch.setattr(tour, "tour_modules", lambda: fake)
    summary = tour.run_tour(quick=True, outdir=tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["sections"]["good"]["figures"] == {"value": 1.5}
    assert saved["sections"]["bad"]["error"] == "RuntimeError: boom"
    assert json.loads((tmp_path / "good.json").read_text()) == {"value": 1.5}
    report = (tmp_path / "report.md").read_text()
    assert "## Good" in report and "FAILED" in report
    assert summary["mode"] == "quick"


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
