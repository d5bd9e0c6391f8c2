"""The command line: discovery, help, one-line errors, the tour's sections and report files."""

import json
import re
import subprocess
import types
from pathlib import Path

import pytest

from frugal.scripts import cli, tour

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = REPO / "scripts" / "systems"


def test_console_script_help_lists_subcommands():
    out = subprocess.run(["frugal", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0
    for name in ("tour", "train"):
        assert name in out.stdout
    for command in cli.commands():
        assert command.path[0] in out.stdout


def test_commands_are_discovered_from_the_system_homes():
    modules = cli.system_modules()
    names = [m.__name__ for m in modules]
    # every system folder with a command.py is discovered, in name order, and nothing else
    on_disk = sorted(p.parent.name for p in SYSTEMS.glob("*/command.py"))
    assert names == [f"frugal.scripts.systems.{name}.command" for name in on_disk]
    found = cli.commands()
    assert all(isinstance(c, cli.Command) for c in found)
    assert found[-1].path == ("tour",)
    paths = [c.path for c in found]
    assert len(paths) == len(set(paths)), "two commands share a path"
    for module in modules:
        assert module.COMMANDS, f"{module.__name__} defines no COMMANDS"
        if hasattr(module, "tour_section"):
            assert isinstance(module.TOUR_ORDER, int)


def test_every_command_and_group_has_help(capsys):
    parser = cli.build_parser()
    paths = {c.path for c in cli.commands()}
    assert ("train",) in paths and ("tour",) in paths
    for path in paths:
        for depth in range(1, len(path) + 1):
            with pytest.raises(SystemExit) as exit_:
                parser.parse_args(list(path[:depth]) + ["--help"])
            assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_tour_help_lists_exactly_the_discovered_sections(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one line per option: no wrapped section names
    with pytest.raises(SystemExit) as exit_:
        cli.main(["tour", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    match = re.search(r"run only these sections: ([\w, ]+)", help_text)
    assert match, help_text
    listed = [name.strip() for name in match.group(1).split(",")]
    discovered = [tour.section_key(m) for m in tour.tour_modules()]
    assert listed == discovered
    # the sections are the system folders whose command module has a tour_section, by TOUR_ORDER
    with_section = {p.parent.name for p in SYSTEMS.glob("*/command.py") if "def tour_section(" in p.read_text()}
    assert set(listed) == with_section
    orders = [m.TOUR_ORDER for m in tour.tour_modules()]
    assert orders == sorted(orders)


def test_tour_rejects_an_unknown_section(capsys):
    assert cli.main(["tour", "--only", "nosuchsection"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("frugal: error:") and "unknown section" in err and "\n" not in err


def test_tour_writes_report_summary_and_survives_a_failing_section(tmp_path, monkeypatch):
    def good(quick, outdir):
        assert quick is True
        return tour.TourSection("Good", {"value": 1.5}, "body", [("value", "1.5")], [])

    def bad(quick, outdir):
        raise RuntimeError("boom")

    fake = [
        types.SimpleNamespace(__name__="frugal.scripts.systems.good.command", tour_section=good, TOUR_ORDER=1),
        types.SimpleNamespace(__name__="frugal.scripts.systems.bad.command", tour_section=bad, TOUR_ORDER=2),
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
    only = tour.run_tour(quick=True, outdir=tmp_path / "only", only=["good"])
    assert list(only["sections"]) == ["good"]


def test_tour_only_updates_its_sections_inside_the_full_report(tmp_path, monkeypatch):
    runs = {"first": 0, "second": 0}

    def section(name, title):
        def run(quick, outdir):
            runs[name] += 1
            return tour.TourSection(title, {"run": runs[name]}, f"{title} body {runs[name]}", [("run", "x")], [])

        return run

    fake = [
        types.SimpleNamespace(__name__="frugal.scripts.systems.first.command", tour_section=section("first", "One")),
        types.SimpleNamespace(__name__="frugal.scripts.systems.second.command", tour_section=section("second", "Two")),
    ]
    monkeypatch.setattr(tour, "tour_modules", lambda: fake)
    tour.run_tour(quick=True, outdir=tmp_path)
    summary = tour.run_tour(quick=True, outdir=tmp_path, only=["second"])
    assert list(summary["sections"]) == ["first", "second"]  # the full order, first kept
    assert summary["sections"]["first"]["figures"] == {"run": 1}
    assert summary["sections"]["second"]["figures"] == {"run": 2}
    text = (tmp_path / "report.md").read_text()
    assert "One body 1" in text and "Two body 2" in text and "Kept from the earlier tour in this folder: first" in text
    # A tour of another mode in the same folder is not merged.
    other = tour.run_tour(quick=False, outdir=tmp_path, only=["second"])
    assert list(other["sections"]) == ["second"]


def test_bad_output_paths_fail_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for argv in (
        ["accel", "ant", "--preset", "quick", "--json", str(blocker / "x.json")],
        ["accel", "ant", "--preset", "quick", "--outdir", str(blocker)],
        ["accel", "ant", "--preset", "quick", "--outdir", str(blocker / "sub")],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("frugal: error:") and str(blocker) in err and err.count("\n") == 1
    assert not (tmp_path / "ant.json").exists()


def test_reports_are_readable_by_the_group_like_other_files(tmp_path):
    import os

    from frugal.scripts.report import write_json

    umask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line(tmp_path):
    import signal
    import sys
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "frugal.scripts.cli", "train", "--steps", "100000", "--workdir", str(tmp_path / "w")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a shell: SIGINT at its default, whatever the test runner's worker set it to
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(8)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "frugal: interrupted"


def test_ctrl_c_handler_is_installed_only_during_main(monkeypatch):
    """While a command runs, SIGINT exits from the signal handler itself; afterwards an in-process
    caller (this test session) gets its own handler back."""
    import signal

    seen = []
    monkeypatch.setattr(cli, "_main", lambda argv: seen.append(signal.getsignal(signal.SIGINT)) or 0)
    before = signal.getsignal(signal.SIGINT)
    assert cli.main([]) == 0
    assert signal.getsignal(signal.SIGINT) is before
    if before is signal.default_int_handler:
        assert seen == [cli._exit_interrupted]
