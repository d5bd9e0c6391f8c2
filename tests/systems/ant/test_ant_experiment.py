"""ANT numeric types on whole models (`frugal quant ant`), end to end on shrunk settings."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

from frugal.scripts.cli import build_parser, main
from frugal.scripts.configs import config_from_flags
from frugal.scripts.systems.ant import command
from frugal.scripts.systems.ant.config import PRESETS, AntQuantConfig
from frugal.scripts.systems.ant.experiment import embedding_agreement, run, tables, write_reports


@pytest.fixture(scope="module")
def text_figures():
    """The quick preset: MiniLM on 16 sentences, Int4 / ANT4 / ANT4-8."""
    return run(PRESETS["quick"])


def test_text_part_ant_beats_int4_on_minilm(text_figures, tmp_path):
    config = PRESETS["quick"]
    assert (config.part, config.sentences_per_topic, config.alpha_step, config.text_extra_high_layers) == (
        "text",
        2,
        0.25,
        2,
    )
    assert config.variants == ("Int4", "ANT4", "ANT4-8")
    figures = text_figures
    scores = figures["text"]["scores"]
    assert scores["FP"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    # The property the paper's BERT results rest on: 4-bit int collapses, adaptive types do not.
    assert scores["ANT4"]["mean_cosine"] > scores["Int4"]["mean_cosine"] + 0.1
    assert scores["ANT4-8"]["mean_cosine"] > scores["ANT4"]["mean_cosine"]
    assert "Int4-8" not in scores
    layers = figures["text"]["layers"]["ANT4-8"]
    assert sum(layers["weight_types"].values()) == 36  # 6 linears x 6 layers; attention einsums stay float
    assert layers["weight_types"].get("int8s", 0) == 4  # last two + two ranked by MSE
    paths = write_reports(figures, tmp_path)
    assert (tmp_path / "ant.json").is_file() and (tmp_path / "ant_types.png").is_file()
    assert paths["plot"] == tmp_path / "ant_types.png"
    # ANT4 through the packed-code kernel path: the same embeddings, 8x fewer weight bytes read
    # (K/2 x N code bytes plus N float32 scales against K x N float32).
    packed = figures["text"]["packed_kernel"]
    assert packed["layers"] == 36  # 6 layers x (q, k, v, attention out, FFN in, FFN out)
    # Per layer the paths agree to float rounding (tests/test_quant_model.py); through 36 layers of
    # 4-bit activations a rounding-order difference can move a value on a cell boundary.
    assert packed["min_cosine_to_fake"] > 0.99 and packed["max_abs_difference_to_fake"] < 0.05
    assert 7.5 < packed["ratio"] < 8.0
    text = (tmp_path / "ant.md").read_text()
    assert "MiniLM" in text and "packed 4-bit codes" in text
    assert "cores, load average" in text and "shared with" not in text  # machine facts, not prose


def test_cli_image_part_writes_json(tmp_path, capsys):
    out = tmp_path / "figures.json"
    code = main(
        [
            "quant",
            "ant",
            "--preset",
            "quick",
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
    assert (tmp_path / "reports" / "ant.md").is_file() and (tmp_path / "reports" / "ant_types.png").is_file()


def test_agreement_metrics_and_bad_config(capsys):
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 4))
    same = embedding_agreement(e, e)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["nn_agreement"] == 1.0
    assert embedding_agreement(e, -e)["mean_cosine"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="part="):
        AntQuantConfig(part="neither")
    with pytest.raises(ValueError, match="variants"):
        AntQuantConfig(variants=("FP8",))
    with pytest.raises(ValueError, match="alpha_step"):
        AntQuantConfig(alpha_step=0.0)
    with pytest.raises(ValueError, match="needs --data-path"):
        AntQuantConfig(part="image", dataset="cifar10")
    assert main(["quant", "ant", "--part", "image", "--dataset", "nope"]) == 2
    assert "dataset" in capsys.readouterr().err
    assert main(["quant", "ant", "--sentences-per-topic", "9"]) == 2
    assert "sentences_per_topic=9" in capsys.readouterr().err


def test_flags_come_from_the_config():
    parser = build_parser()
    args = parser.parse_args(
        ["quant", "ant", "--preset", "tour", "--part", "both", "--extra-8bit", "3", "--qat-lr", "1e-4"]
    )
    config = config_from_flags(args, AntQuantConfig, PRESETS)
    assert config == dataclasses.replace(PRESETS["tour"], part="both", text_extra_high_layers=3, qat_learning_rate=1e-4)
    assert config.image and config.text
    assert not PRESETS["tour"].image and PRESETS["full"] == AntQuantConfig()
    default = config_from_flags(parser.parse_args(["quant", "ant"]), AntQuantConfig, PRESETS)
    assert default == PRESETS["full"]
    flags = parser.parse_args(["quant", "ant"])._config_flags
    assert {f.path for f in flags} == {(f.name,) for f in dataclasses.fields(AntQuantConfig)}


def test_tour_section_on_the_quick_preset(text_figures, tmp_path, monkeypatch):
    from frugal.scripts.systems.ant import experiment

    seen = []

    def cached_run(config):  # the quick preset's figures, already measured by the fixture
        seen.append(config)
        return copy.deepcopy(text_figures)

    monkeypatch.setitem(command.PRESETS, "tour", PRESETS["quick"])
    monkeypatch.setattr(experiment, "run", cached_run)
    section = command.tour_section(True, tmp_path)
    assert seen == [PRESETS["quick"]]
    assert section.plots == ["ant/ant_types.png"] and (tmp_path / "ant" / "ant_types.png").is_file()
    assert (tmp_path / "ant" / "ant.json").is_file()
    assert [what for what, _ in section.summary] == ["MiniLM cosine to FP Int4 / ANT4 / ANT4-8"]
    assert "The tour runs the MiniLM part only" in section.markdown
