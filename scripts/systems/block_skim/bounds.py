"""How far Block-Skim can go on the built-in fact-QA set: FLOPs speedups of *perfect* predictors.

`python -m frugal.scripts.systems.block_skim.bounds` prints, for MiniLM-L6 sized layers, the FLOPs speedup that oracle
predictors would reach on the built-in dev windows (exact per-layer FLOPs of `frugal.transforms.block_skim`,
predictor CNNs left out, so these are upper bounds):

- keeping the question block plus every block that holds any invented fact (the answer and, with
  `--distractors`, the look-alike facts) after a given layer: the best a predictor can do that only tells facts from
  filler text;
- keeping the question block plus the answer's blocks: the best any predictor can do;
- both in two stages (facts after one layer, answer only after a later one).

Facts are found as the context text not covered by the filler sentences the generator draws from
(`qa_data.filler_sentences`), so this applies to the built-in set only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from frugal.scripts.systems.block_skim.qa_data import (
    QAFeatures,
    featurize,
    filler_sentences,
    make_fact_qa,
    plain_tokenizer,
)
from frugal.transforms.block_skim import encoder_layer_flops


def fact_character_mask(context: str, filler: Sequence[str]) -> np.ndarray:
    """True for the characters of `context` that no filler sentence covers (the invented facts)."""
    covered = np.zeros(len(context), bool)
    for sentence in sorted(set(filler), key=len, reverse=True):
        start = context.find(sentence)
        while start >= 0:
            covered[start : start + len(sentence)] = True
            start = context.find(sentence, start + 1)
    return ~covered & np.array([not c.isspace() for c in context], bool)


def window_blocks(features: QAFeatures, window: int, fact_chars: np.ndarray, block: int = 32):
    """(question, fact, answer) block masks of one window; each block is `block` tokens."""
    n, nq = int(features.num_tokens[window]), int(features.question_length[window])
    blocks = -(-n // block)
    question, fact, answer = (np.zeros(blocks, bool) for _ in range(3))
    question[: -(-nq // block)] = True
    for t in range(nq, n):
        a, b = features.offsets[window, t]
        if a >= 0 and fact_chars[a:b].any():
            fact[t // block] = True
    start, end = int(features.start_positions[window]), int(features.end_positions[window])
    if end > 0:
        answer[start // block : end // block + 1] = True
    return question, fact, answer


def stage_flops(
    tokens: int, kept: Sequence[tuple[int, float]], num_layers: int, hidden: int, intermediate: int
) -> tuple[int, int]:
    """(full, pruned) encoder FLOPs of one window; `kept` lists (after layer L, kept tokens) stages."""
    full = num_layers * encoder_layer_flops(tokens, hidden, intermediate)
    current, pruned, stages = tokens, 0, dict(kept)
    for layer in range(num_layers):
        pruned += encoder_layer_flops(current, hidden, intermediate)
        if layer in stages:
            current = int(stages[layer])
    return full, pruned


def bounds(
    n_dev: int = 200,
    *,
    seed: int = 1000,
    distractors: int = 0,
    context_tokens: tuple[int, int] = (440, 490),
    max_seq_len: int = 512,
    doc_stride: int = 128,
    block: int = 32,
    num_layers: int = 6,
    hidden: int = 384,
    intermediate: int = 1536,
) -> dict:
    """Defaults: the dev set of `frugal skim` (seed 1000); the harder set is distractors=3,
    context_tokens=(300, 360), max_seq_len=384."""
    examples = make_fact_qa(n_dev, seed=seed, distractors=distractors, context_tokens=context_tokens)
    features = featurize(examples, plain_tokenizer(), max_seq_len=max_seq_len, doc_stride=doc_stride)
    filler = filler_sentences()
    plans = {f"facts after layer {L}": ("facts", None, L) for L in (0, 1)}
    plans.update({f"answer after layer {L}": ("answer", None, L) for L in (0, 1, 2)})
    plans.update({f"facts after layer 0, answer after layer {L}": ("facts", "answer", L) for L in (1, 2)})
    totals = {name: [0, 0] for name in plans}
    shares = {"facts": [], "answer": []}
    for w in range(len(features)):
        chars = fact_character_mask(examples[int(features.example_index[w])].context, filler)
        question, fact, answer = window_blocks(features, w, chars, block)
        keep = {"facts": question | fact | answer, "answer": question | answer}
        for kind in shares:
            shares[kind].append(keep[kind].mean())
        tokens = int(features.num_tokens[w])
        for name, (first, second, layer) in plans.items():
            stages = [(0 if second else layer, keep[first].sum() * block)]
            if second:
                stages.append((layer, keep[second].sum() * block))
            full, pruned = stage_flops(tokens, stages, num_layers, hidden, intermediate)
            totals[name][0] += full
            totals[name][1] += pruned
    return {
        "windows": len(features),
        "kept_share": {k: float(np.mean(v)) for k, v in shares.items()},
        "flops_speedup_upper_bound": {name: full / pruned for name, (full, pruned) in totals.items()},
    }


# The fields of `SkimConfig` that define the dev set; `main` takes them as flags (help and defaults from there).
DATA_FIELDS = ("n_dev", "distractors", "context_tokens", "max_seq_len", "doc_stride", "seed")


def bounds_for(config) -> dict:
    """`bounds` on exactly the dev set `frugal skim` evaluates with this `SkimConfig`."""
    return bounds(
        config.n_dev,
        seed=config.seed + 1000,
        distractors=config.distractors,
        context_tokens=tuple(config.context_tokens),
        max_seq_len=config.max_seq_len,
        doc_stride=config.doc_stride,
    )


def main(argv=None) -> dict:
    import dataclasses

    from frugal.scripts.systems.block_skim.config import PRESETS, SkimConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="full", help="the dev set of this `frugal skim` preset"
    )
    fields = {f.name: f for f in dataclasses.fields(SkimConfig)}
    for name in DATA_FIELDS:
        default = getattr(PRESETS["full"], name)
        extra = dict(nargs=2, metavar=("LO", "HI")) if isinstance(default, tuple) else {}
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=None,
            help=f"{fields[name].metadata['help']} (default: the preset's; full: {default})",
            **extra,
        )
    args = parser.parse_args(argv)
    given = {n: getattr(args, n) for n in DATA_FIELDS if getattr(args, n) is not None}
    config = dataclasses.replace(
        PRESETS[args.preset], **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}
    )
    result = bounds_for(config)
    print(
        f"{result['windows']} dev windows; share of blocks kept by an oracle: question + facts "
        f"{result['kept_share']['facts']:.3f}, question + answer {result['kept_share']['answer']:.3f}"
    )
    for name, speedup in result["flops_speedup_upper_bound"].items():
        print(f"  {name:40s} FLOPs speedup <= {speedup:.2f}x")
    return result


if __name__ == "__main__":
    main()
