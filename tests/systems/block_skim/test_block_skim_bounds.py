"""Oracle FLOPs bounds for Block-Skim on the built-in set."""

from frugal.scripts.systems.block_skim.bounds import bounds, fact_character_mask, stage_flops
from frugal.transforms.block_skim import encoder_layer_flops


def test_fact_mask_covers_exactly_the_text_outside_filler_sentences():
    filler = ["Cats sleep a lot.", "Rain is wet."]
    fact = "The capital of Veloria is Ostbury."
    context = f"Cats sleep a lot. {fact} Rain is wet."
    mask = fact_character_mask(context, filler)
    start = context.index(fact)
    assert mask[start : start + len(fact)].sum() == len(fact.replace(" ", ""))
    assert mask.sum() == len(fact.replace(" ", ""))


def test_stage_flops_counts_each_layer_at_the_tokens_it_sees():
    f = lambda n: encoder_layer_flops(n, 8, 32)
    assert stage_flops(64, [], 6, 8, 32) == (6 * f(64), 6 * f(64))
    assert stage_flops(64, [(0, 32)], 6, 8, 32) == (6 * f(64), f(64) + 5 * f(32))
    assert stage_flops(64, [(0, 32), (2, 16)], 6, 8, 32)[1] == f(64) + 2 * f(32) + 3 * f(16)


def test_answer_oracle_beats_fact_oracle_and_bounds_exceed_one():
    result = bounds(6, distractors=3, context_tokens=(300, 360), max_seq_len=384)
    up = result["flops_speedup_upper_bound"]
    assert 0 < result["kept_share"]["answer"] < result["kept_share"]["facts"] <= 1
    assert up["answer after layer 0"] > up["facts after layer 0"] > 1
    assert up["answer after layer 0"] > up["answer after layer 1"] > up["answer after layer 2"] > 1
    # Pruning to the facts first only helps: between answer-only after layer 1 and after layer 0.
    assert up["answer after layer 1"] <= up["facts after layer 0, answer after layer 1"] <= up["answer after layer 0"]


def test_without_distractors_the_only_fact_is_the_answer():
    result = bounds(6)  # the default set: one answer fact among filler sentences
    share = result["kept_share"]
    # Facts are the answer sentence, which may reach one block past the answer span's blocks.
    assert share["answer"] <= share["facts"] < share["answer"] + 1 / 15


def test_main_takes_the_dev_set_of_a_skim_preset(capsys):
    from frugal.scripts.systems.block_skim.bounds import main

    result = main(["--preset", "quick", "--n-dev", "3"])
    assert result["windows"] >= 3
    assert "answer after layer 0" in capsys.readouterr().out
