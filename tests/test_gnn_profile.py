"""The per-stage profiler, node-classification training, the PyG bench driver and the CLI wiring."""

import json

import numpy as np
import pytest

from frugal.scripts import graph_data
from frugal.scripts.gnn_profile import ProfileConfig, findings, run, train_node_classifier
from frugal.scripts.gnn_pyg_bench import SKIPPED, BenchConfig, find_pyg_python


@pytest.mark.slow
def test_profile_writes_consistent_report(tmp_path):
    config = ProfileConfig(
        models=("gcn", "rgcn", "sage_lstm"),
        scale=0.05,
        features=8,
        heads=2,
        repeats=1,
        num_bases=2,
        train_models=(),
        train_steps=0,
        outdir=str(tmp_path),
    )
    figures = run(config)
    for name in ("gnn_profile.json", "gnn_profile.md", "gnn_stage_breakdown.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "gnn_profile.json").read_text())
    assert set(saved["models"]) == {"gcn", "rgcn", "sage_lstm"}
    for entry in figures["models"].values():
        for mode in ("unfused", "fused"):
            if mode not in entry:
                continue
            stages = entry[mode]["stages"]
            assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0)
            assert stages["Gather"]["ms"] > 0 and stages["Gather"]["bytes"] > 0
        if "fused" in entry:
            assert entry["fused_max_abs_diff"] < 1e-4  # both Gathers compute the same layer
            assert entry["fused"]["stages"]["Scatter"]["ms"] == 0  # fusion removes the message Scatter
    assert "fused" not in figures["models"]["sage_lstm"]  # an LSTM is not a sparse product
    assert figures["models"]["rgcn"]["dataset"] == "aifb"
    assert figures["models"]["rgcn"]["unfused"]["stages"]["ApplyEdge"]["flops"] > 0
    assert len(figures["findings"]) == 4 and "CPU" in figures["cpu_note"]


def test_findings_logic_on_synthetic_numbers():
    def entry(shares, extra=None):
        stages = {s: {"share": v, "ms": 10 * v} for s, v in shares.items()}
        dominant = max(shares, key=shares.get)
        return {"unfused": {"stages": stages, "dominant": dominant, "total_ms": 10.0}, **(extra or {})}

    models = {
        "gat": entry({"Scatter": 0.1, "ApplyEdge": 0.1, "Gather": 0.6, "ApplyVertex": 0.2}),
        "rgcn": entry({"Scatter": 0.1, "ApplyEdge": 0.3, "Gather": 0.2, "ApplyVertex": 0.4}),
    }
    result = {f["claim"].split()[0]: f["holds"] for f in findings(models)}
    assert result == {"GAT": True, "RGCN": False}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gcn", "gat"])
def test_training_beats_chance_on_builtin_citation_graph(kind):
    data = graph_data.synthetic_graph("cora", scale=0.25, seed=1)
    result = train_node_classifier(kind, data, steps=40, seed=0)
    assert result["test_accuracy"] > result["chance_majority"] + 0.25, result
    assert result["test_accuracy"] > 2.5 * result["chance_uniform"]


def test_training_rejects_empty_masks():
    data = graph_data.synthetic_graph("cora", scale=0.05)
    empty = graph_data.GraphDataset(
        data.name,
        data.x,
        data.y,
        data.edge_index,
        np.zeros_like(data.train_mask),
        data.val_mask,
        data.test_mask,
        data.num_classes,
    )
    with pytest.raises(ValueError, match="train and test masks"):
        train_node_classifier("gcn", empty, steps=1)


def test_configs_validate():
    with pytest.raises(ValueError, match="not known"):
        ProfileConfig(models=("gcn", "transformer"))
    with pytest.raises(ValueError, match="divisible by heads"):
        ProfileConfig(features=30, heads=8)
    with pytest.raises(ValueError, match="relational_dataset"):
        ProfileConfig(relational_dataset="cora")
    with pytest.raises(ValueError, match="PyG comparison covers"):
        BenchConfig(models=("gin",))
    with pytest.raises(FileNotFoundError, match="pyg_python"):
        find_pyg_python("/nonexistent/python")


@pytest.mark.slow
def test_bench_without_pyg_reports_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("FRUGAL_PYG_PYTHON", raising=False)
    if find_pyg_python() is not None:
        pytest.skip("torch_geometric is importable here; the skip path cannot be exercised")
    figures = __import__("frugal.scripts.gnn_pyg_bench", fromlist=["run"]).run(
        BenchConfig(datasets=("citeseer",), models=("gcn",), repeats=1, outdir=str(tmp_path))
    )
    assert figures["status"] == SKIPPED and "install the bench extra" in SKIPPED
    row = figures["results"][0]
    assert row["ours_fused_ms"] > 0 and "pyg_best_ms" not in row
    assert "skipped" in (tmp_path / "gnn_bench.md").read_text()


def test_cli_reports_user_errors(capsys):
    from frugal.scripts.cli import main

    assert main(["gnn", "bench", "--models", "gin"]) == 2
    assert "PyG comparison covers" in capsys.readouterr().err
    assert main(["gnn", "profile", "--models", "gcn", "--dataset", "reddit"]) == 2
    assert "not known" in capsys.readouterr().err


def test_interleaved_rounds_alternate_and_keep_the_fastest_call():
    from frugal.scripts.gnn_pyg_bench import _interleaved_times

    calls = []

    def timer(name, seconds):
        def run(n):
            calls.append((name, n))
            slow = name == "a" and len(calls) < 5  # a's first two rounds are 10x slower
            return [seconds * (10 if slow else 1)] * n

        return run

    times = _interleaved_times({"a_ms": timer("a", 0.002), "b_ms": timer("b", 0.001)}, repeats=7, calls_per_round=3)
    assert calls == [("a", 3), ("b", 3)] * 3  # turns alternate; 3 rounds cover 7 repeats
    assert times == pytest.approx({"a_ms": 20.0, "a_min_ms": 2.0, "b_ms": 1.0, "b_min_ms": 1.0})


@pytest.mark.slow
def test_bench_drives_a_pyg_worker_in_alternating_rounds(tmp_path):
    """A stand-in worker that speaks the `serve` protocol (no torch needed) checks the driver:
    it answers with fixed times, and the report turns them into medians and ratios."""
    import sys

    from frugal.scripts.gnn_pyg_bench import run as bench

    log = tmp_path / "log.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(f"""#!{sys.executable}
import json, sys
import numpy as np
request, result = sys.argv[3], sys.argv[4]
case = str(np.load(request)["cases"][0])
json.dump({{"torch": "fake", "torch_geometric": "fake", "threads": 2, "case": case,
           "errors": {{"csr": "NotImplementedError: fake"}}, "paths": ["edge_index"]}}, open(result, "w"))
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[0] == "quit":
        break
    open({str(log)!r}, "a").write(line)
    print(json.dumps([0.25] * int(words[2])), flush=True)
""")
    fake.chmod(0o755)
    figures = bench(
        BenchConfig(
            datasets=("citeseer",),
            models=("gcn",),
            repeats=4,
            calls_per_round=2,
            pyg_python=str(fake),
            outdir=str(tmp_path),
        )
    )
    row = figures["results"][0]
    assert log.read_text().splitlines() == ["time edge_index 2"] * 2
    assert row["pyg_edge_index_ms"] == pytest.approx(250.0) and row["pyg_csr_ms"] is None
    assert "fake" in row["pyg_csr_error"]
    assert row["speedup_vs_pyg_best"] == pytest.approx(250.0 / row["ours_best_ms"])
    assert "250.000" in (tmp_path / "gnn_bench.md").read_text()
