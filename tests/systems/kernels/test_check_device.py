"""`frugal check-device`: says there is nothing to check on a CPU; the interpret-mode dry run goes through
every kernel, agrees with the references, and writes its report."""

import json

import jax
import pytest

from frugal.scripts import cli
from frugal.scripts.systems.kernels.config import PRESETS, KernelCheckConfig
from frugal.scripts.systems.kernels.experiment import run


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU message")
def test_cpu_has_nothing_to_check(tmp_path, capsys):
    figures = run(KernelCheckConfig(outdir=str(tmp_path)))
    assert figures["rows"] == [] and "nothing to check" in figures["message"]
    assert cli.main(["check-device", "--outdir", str(tmp_path)]) == 0
    assert "nothing to check" in capsys.readouterr().out


@pytest.mark.slow
def test_dry_run_checks_every_kernel(tmp_path):
    assert (
        cli.main(["check-device", "--preset", "quick", "--outdir", str(tmp_path), "--json", str(tmp_path / "f.json")])
        == 0
    )
    figures = json.loads((tmp_path / "f.json").read_text())
    assert {r["kernel"] for r in figures["rows"]} == {"ant_matmul", "hybrid_attention", "csr_matmul"}
    assert figures["ok"] is True and all(r["relative_error"] < 0.05 for r in figures["rows"])
    assert "fraction of peak" in (tmp_path / "check_device.md").read_text()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="MxKxN"):
        KernelCheckConfig(matmul_shapes=("12x3",))
    assert PRESETS["quick"].interpret


def test_pattern_sweep_checks_the_kernel_against_dense(monkeypatch):
    """One case of the device pattern sweep (odd n, per-head dilation), f32 at IEEE precision and
    bf16, in interpret mode: the kernel agrees with the dense path."""
    from frugal.scripts.systems.kernels import experiment

    monkeypatch.setattr(experiment, "PATTERN_CASES", experiment.PATTERN_CASES[:1])
    rows = list(experiment.check_attention_patterns(KernelCheckConfig(interpret=True)))
    assert len(rows) == 2 and all(r["ok"] and "error" not in r for r in rows)
    assert rows[0]["relative_error"] < 1e-5
