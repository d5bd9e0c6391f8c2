"""frugal.scripts.ant_experiments and `frugal quant ant`, end to end on shrunk settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frugal.scripts.ant_experiments import AntExperimentConfig, _agreement, run, tables
from frugal.scripts.cli import main


def test_text_part_ant_beats_int4_on_minilm(tmp_path):
    config = AntExperimentConfig(
        image=False,
        sentences_per_topic=2,
        alpha_step=0.25,
        text_extra_high_layers=2,
        variants=("Int4", "ANT4", "ANT4-8"),
        outdir=str(tmp_path),
    )
    figures = run(config)
    scores = figures["text"]["scores"]
    assert scores["FP"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    # The property the paper's BERT results rest on: 4-bit int collapses, adaptive types do not.
    assert scores["ANT4"]["mean_cosine"] > scores["Int4"]["mean_cosine"] + 0.1
    assert scores["ANT4-8"]["mean_cosine"] > scores["ANT4"]["mean_cosine"]
    assert "Int4-8" not in scores
    layers = figures["text"]["layers"]["ANT4-8"]
    assert sum(layers["weight_types"].values()) == 36  # 6 linears x 6 layers; attention einsums stay float
    assert layers["weight_types"].get("int8s", 0) == 4  # last two + two ranked by MSE
    assert (tmp_path / "ant.json").is_file() and (tmp_path / "ant_types.png").is_file()
    assert "MiniLM" in (tmp_path / "ant.md").read_text()


def test_cli_image_part_writes_json(tmp_path, capsys):
    out = tmp_path / "figures.json"
    code = main(
        [
            "quant",
            "ant",
            "--part",
            "image",
            "--dataset",
            "digits",
            "--image-size",
            "8",
            "--width",
            "4",
            "--fp-steps",
            "30",
            "--qat-steps",
            "0",
            "--alpha-step",
            "0.25",
            "--variants",
            "ANT4-8",
            "--outdir",
            str(tmp_path / "reports"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    figures = json.loads(out.read_text())
    acc = figures["image"]["accuracy"]
    assert set(acc) == {"FP", "ANT4-8"}
    assert set(figures["image"]["layers"]) == {"Int4", "IP-F", "ANT4", "Int4-8", "ANT4-8"}  # plans are cheap
    assert all(0.0 <= row["ptq"] <= 1.0 for row in acc.values())
    assert acc["ANT4-8"]["qat"] is None  # --qat-steps 0: PTQ only (QAT is covered in test_quant_model)
    assert figures["image"]["promoted_to_8bit"] == ["stem_conv:conv_general_dilated0", "head:dot_general0"]
    assert figures["image"]["paper_resnet18_imagenet"]["ANT4-8"] == 69.64
    assert "paper ResNet-18" in capsys.readouterr().out
    assert len(tables(figures)) == 1


def test_agreement_metrics_and_bad_config(capsys):
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 4))
    same = _agreement(e, e)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["nn_agreement"] == 1.0
    assert _agreement(e, -e)["mean_cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least one"):
        AntExperimentConfig(image=False, text=False)
    with pytest.raises(ValueError, match="variants"):
        AntExperimentConfig(variants=("FP8",))
    with pytest.raises(ValueError, match="alpha_step"):
        AntExperimentConfig(alpha_step=0.0)
    assert main(["quant", "ant", "--part", "image", "--dataset", "nope"]) == 2
    assert "dataset" in capsys.readouterr().err
