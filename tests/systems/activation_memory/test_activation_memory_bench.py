"""`frugal bench memory`: the benchmark driver on the quick preset, its flags and its tour section."""

import dataclasses
import json

import pytest

from frugal.scripts import cli
from frugal.scripts.configs import config_from_flags
from frugal.scripts.systems.activation_memory import command
from frugal.scripts.systems.activation_memory.config import PRESETS, ActivationMemoryConfig
from frugal.scripts.systems.activation_memory.experiment import auto_checks, markdown_report, run


@pytest.mark.slow
def test_benchmark_driver_small_config():
    config = PRESETS["quick"]
    assert config == ActivationMemoryConfig(
        models=("gelu_mlp",),
        policies=("autodiff", "nested", "recompute", "auto"),
        regimes=("split", "eager"),
        small=True,
        repeats=1,
        reference_check=False,
    )
    figures = run(config, progress=lambda _: None)
    rows = {(r["regime"], r["policy"]): r for r in figures["rows"]}
    assert rows[("split", "nested")]["residual_bytes"] == rows[("split", "recompute")]["residual_bytes"]
    assert figures["split_residual_reduction_nested_vs_autodiff"]["gelu_mlp"] >= 1.97
    # eager: the arrays the op-by-op VJP closure really holds shrink as well
    assert rows[("eager", "nested")]["residual_bytes"] < rows[("eager", "autodiff")]["residual_bytes"] / 1.97
    assert all(c["memory_not_worse_than_autodiff"] for c in auto_checks(figures["rows"]))
    # split: auto decides per activation, so it is its own program (gelu_tanh -> nested, the same HLO);
    # eager: a relabel of recompute.
    assert rows[("split", "auto")]["measured_as"] == "auto" and rows[("split", "auto")]["resolved"] == "nested"
    assert rows[("split", "auto")]["same_program_as"] == ["nested"]
    assert rows[("eager", "auto")]["measured_as"] == "recompute"
    text = markdown_report(figures)
    assert "Split-program residual reduction" in text
    assert "cores, load average" in text and "shared with" not in text  # machine facts, not prose
    assert "load_average_before" in figures["machine"]
    with pytest.raises(ValueError, match="policies"):
        ActivationMemoryConfig(policies=("nested",))


def test_flags_come_from_the_config(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["bench", "memory", "--preset", "tour", "--regimes", "split", "--no-reference"])
    config = config_from_flags(args, ActivationMemoryConfig, PRESETS)
    assert config == dataclasses.replace(PRESETS["tour"], regimes=("split",), reference_check=False)
    assert config_from_flags(parser.parse_args(["bench", "memory"]), ActivationMemoryConfig, PRESETS) == (
        ActivationMemoryConfig()
    )
    flags = parser.parse_args(["bench", "memory"])._config_flags
    assert {f.path for f in flags} == {(f.name,) for f in dataclasses.fields(ActivationMemoryConfig)}
    assert cli.main(["bench", "memory", "--policies", "nested", "recompute"]) == 2
    assert "must include 'autodiff'" in capsys.readouterr().err
    assert cli.main(["bench", "memory", "--repeats", "0"]) == 2
    assert "repeats=0" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_reports_and_tour_section(tmp_path, monkeypatch):
    out = tmp_path / "figures.json"
    argv = ["bench", "memory", "--preset", "quick", "--policies", "autodiff", "nested", "--regimes", "split"]
    assert cli.main(argv + ["--outdir", str(tmp_path / "reports"), "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {(r["regime"], r["policy"]) for r in figures["rows"]} == {("split", "autodiff"), ("split", "nested")}
    for name in ("memory.json", "memory.md", "memory.png"):
        assert (tmp_path / "reports" / name).is_file()

    small = dataclasses.replace(PRESETS["quick"], policies=("autodiff", "nested"), regimes=("split",))
    monkeypatch.setitem(command.PRESETS, "tour", small)
    section = command.tour_section(True, tmp_path)
    assert section.plots == ["activation_memory.png"] and (tmp_path / "activation_memory.png").is_file()
    assert section.summary[0][0] == "gelu_mlp split residuals, nested vs autodiff"
    assert "cores, load average" in section.markdown


def test_program_text_ignores_where_the_source_is_but_not_what_it_computes():
    import jax
    import jax.numpy as jnp

    from frugal.scripts.systems.activation_memory.experiment import _program_text

    def compiled(fn):
        return jax.jit(jax.grad(fn)).lower(jnp.ones(4)).compile()

    def first(x):
        return jnp.sum(jnp.tanh(x) * 2)

    def second(x):  # the same computation, written elsewhere under another name
        return jnp.sum(jnp.tanh(x) * 2)

    text = _program_text(compiled(first))
    assert "metadata=" not in text and "FileLocations" not in text and "ENTRY" in text
    assert text == _program_text(compiled(second))
    assert text != _program_text(compiled(lambda x: jnp.sum(jnp.sin(x) * 2)))
