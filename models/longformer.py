"""Longformer encoder (Beltagy et al. 2020) in Flax NNX, laid out like the public checkpoints.

Attribute paths mirror Hugging Face's `LongformerModel` state dict, so `allenai/longformer-base-4096`
weights stored as safetensors load by name: `embeddings.word_embeddings.weight`,
`encoder.layer.{i}.attention.self.{query,key,value,query_global,key_global,value_global}.{weight,bias}`,
`encoder.layer.{i}.attention.output.{dense,LayerNorm}`, `encoder.layer.{i}.intermediate.dense`,
`encoder.layer.{i}.output.{dense,LayerNorm}` (a `longformer.` prefix, as in the task heads'
checkpoints, is accepted; unused heads such as `pooler.*` or `lm_head.*` are reported, not loaded).
Linear weights are stored (out, in) there and transposed into NNX kernels (in, out).

Attention is `frugal.transforms.attention.hybrid_attention` with Longformer's pattern: `attention_window // 2`
keys on each side, symmetric global tokens with separate global Q/K/V projections. Unlike Hugging Face,
the global tokens are static (a tuple per call, e.g. the question's positions), which is what lets the
banded and Pallas paths plan their blocks at trace time; sequences need no padding to a window multiple.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.models.layers import resolve_activation
from frugal.transforms.attention import AttentionPattern, hybrid_attention, masked_softmax_weights
from frugal.transforms.initializers import Linear, normal


@dataclasses.dataclass(frozen=True)
class LongformerConfig:
    """Hyperparameters with Hugging Face's names; defaults are longformer-base-4096."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 4098
    type_vocab_size: int = 1
    attention_window: int | tuple[int, ...] = 512
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}"
            )
        windows = self.windows
        if len(windows) != self.num_hidden_layers:
            raise ValueError(
                f"attention_window has {len(windows)} entries; give one int or one per layer ({self.num_hidden_layers})"
            )
        for w in windows:
            if w <= 0 or w % 2:
                raise ValueError(f"attention_window={w} must be a positive even number (Longformer convention)")
        resolve_activation(self.hidden_act)

    @property
    def windows(self) -> tuple[int, ...]:
        if isinstance(self.attention_window, (tuple, list)):
            return tuple(self.attention_window)
        return (self.attention_window,) * self.num_hidden_layers

    @classmethod
    def from_hf_dict(cls, config: dict) -> LongformerConfig:
        """From a Hugging Face config.json dict (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in names}
        if isinstance(kwargs.get("attention_window"), list):
            kwargs["attention_window"] = tuple(kwargs["attention_window"])
        return cls(**kwargs)


class _Embed(nnx.Module):
    def __init__(self, num: int, features: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(normal(0.02)(rngs.params(), (num, features)))

    def __call__(self, ids):
        return self.weight[...][ids]


class _LayerNorm(nnx.Module):
    def __init__(self, features: int, eps: float):
        self.weight = nnx.Param(jnp.ones((features,)))
        self.bias = nnx.Param(jnp.zeros((features,)))
        self.eps = eps

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps) * self.weight[...] + self.bias[...]


class _Linear(nnx.Module):
    """A dense layer stored like torch.nn.Linear: weight (out, in), bias (out,)."""

    def __init__(self, fan_in: int, fan_out: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(normal(0.02)(rngs.params(), (fan_out, fan_in)))
        self.bias = nnx.Param(jnp.zeros((fan_out,)))

    def __call__(self, x):
        return x @ self.weight[...].T + self.bias[...]


class LongformerEmbeddings(nnx.Module):
    def __init__(self, config: LongformerConfig, *, rngs: nnx.Rngs):
        self.word_embeddings = _Embed(config.vocab_size, config.hidden_size, rngs=rngs)
        self.position_embeddings = _Embed(config.max_position_embeddings, config.hidden_size, rngs=rngs)
        self.token_type_embeddings = _Embed(config.type_vocab_size, config.hidden_size, rngs=rngs)
        self.LayerNorm = _LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.pad_token_id = config.pad_token_id

    def __call__(self, input_ids, token_type_ids=None):
        # RoBERTa positions: pad tokens keep pad_token_id, real tokens count from pad_token_id + 1.
        real = (input_ids != self.pad_token_id).astype(jnp.int32)
        positions = jnp.cumsum(real, axis=1) * real + self.pad_token_id
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.LayerNorm(x)


PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")


def _folded_global_rows(weights, x, rows, key_mask, num_heads: int, scale: float):
    """The global tokens' rows: query_global(x_g) against key_global / value_global of every token.

    Exact algebra instead of projecting every token with key_global and value_global (two n x size x
    size GEMMs): per head, q_g . (W_k x_j + b_k) = (W_k^T q_g) . x_j + q_g . b_k, and
    sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v sum_j p_j. That costs O(n * size * g * heads)
    instead of O(n * size^2), a 2 * size / (g * heads) = 128x saving for Longformer-base with one
    global token; it pays while g * heads < size.
    """
    batch, n, size = x.shape
    head_dim = size // num_heads
    w_q, b_q = weights["query_global"]
    w_k, b_k = weights["key_global"]
    w_v, b_v = weights["value_global"]
    q_g = (x[:, rows] @ w_q.T + b_q).reshape(batch, len(rows), num_heads, head_dim)
    folded_k = jnp.einsum("bghd,hde->bghe", q_g, w_k.reshape(num_heads, head_dim, size))
    score_bias = jnp.einsum("bghd,hd->bhg", q_g, b_k.reshape(num_heads, head_dim))
    scores = (jnp.einsum("bghe,bne->bhgn", folded_k, x) + score_bias[..., None]) * scale
    mask = jnp.ones((1, 1, 1, n), bool) if key_mask is None else key_mask[:, None, None, :]
    probs = masked_softmax_weights(scores, mask)  # (b, h, g, n); all-zero rows when nothing is allowed
    mixed = jnp.einsum("bhgn,bne->bghe", probs, x)
    out = jnp.einsum("bghe,hde->bghd", mixed, w_v.reshape(num_heads, head_dim, size))
    mass = jnp.transpose(jnp.sum(probs, axis=-1), (0, 2, 1))[..., None]  # (b, g, h, 1): 1, or 0 if masked
    return out + b_v.reshape(num_heads, head_dim) * mass


def longformer_self_attention(
    weights, x, pattern: AttentionPattern, num_heads: int, *, key_mask=None, impl: str = "auto"
):
    """Longformer self-attention (before the output projection) as a pure function.

    Args:
      weights: {name: (weight (out, in), bias (out,))} for the names in `PROJECTIONS` (torch layout).
      x: (batch, seq, size) hidden states.
      pattern: the window and global tokens (`AttentionPattern`).
      num_heads: heads; size must be divisible by it.
      key_mask: optional (batch, seq) bool, True for real tokens.
      impl: `hybrid_attention`'s implementation for the local rows.

    Local rows use query/key/value (one fused GEMM), including for the global keys; the global rows
    use the global projections over every key, computed by `_folded_global_rows`. The same function
    as Hugging Face's `LongformerSelfAttention`.
    """
    batch, n, size = x.shape
    if size % num_heads:
        raise ValueError(f"hidden size {size} is not divisible by num_heads={num_heads}")
    head_dim = size // num_heads
    fused_w = jnp.concatenate([weights[m][0] for m in PROJECTIONS[:3]], axis=0)
    fused_b = jnp.concatenate([weights[m][1] for m in PROJECTIONS[:3]], axis=0)
    q, k, v = (p.reshape(batch, n, num_heads, head_dim) for p in jnp.split(x @ fused_w.T + fused_b, 3, axis=-1))
    # Global rows computed here from q/k/v are replaced below; for g << n that waste is g rows.
    out = hybrid_attention(q, k, v, pattern, impl=impl, key_mask=key_mask)
    if pattern.global_tokens:
        rows = np.asarray(pattern.global_tokens)
        out_g = _folded_global_rows(weights, x, rows, key_mask, num_heads, 1.0 / math.sqrt(head_dim))
        out = out.at[:, rows].set(out_g.astype(out.dtype))
    return out.reshape(batch, n, size)


class LongformerSelfAttention(nnx.Module):
    def __init__(self, config: LongformerConfig, window: int, *, rngs: nnx.Rngs):
        size = config.hidden_size
        for name in PROJECTIONS:
            setattr(self, name, _Linear(size, size, rngs=rngs))
        self.num_heads = config.num_attention_heads
        self.window = window

    def __call__(self, x, key_mask, global_tokens: tuple[int, ...], impl: str):
        pattern = AttentionPattern(window=self.window, global_tokens=global_tokens)
        weights = {name: (getattr(self, name).weight[...], getattr(self, name).bias[...]) for name in PROJECTIONS}
        out = longformer_self_attention(weights, x, pattern, self.num_heads, key_mask=key_mask, impl=impl)
        # Hugging Face zeroes the attention output of padded query positions; do the same.
        return out * key_mask[..., None].astype(out.dtype) if key_mask is not None else out


class _DenseNorm(nnx.Module):
    """`dense` then residual + `LayerNorm` (HF's SelfOutput and Output blocks)."""

    def __init__(self, fan_in: int, fan_out: int, eps: float, *, rngs: nnx.Rngs):
        self.dense = _Linear(fan_in, fan_out, rngs=rngs)
        self.LayerNorm = _LayerNorm(fan_out, eps)

    def __call__(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _Intermediate(nnx.Module):
    def __init__(self, config: LongformerConfig, *, rngs: nnx.Rngs):
        self.dense = _Linear(config.hidden_size, config.intermediate_size, rngs=rngs)
        self.activation = resolve_activation(config.hidden_act)

    def __call__(self, x):
        return self.activation(self.dense(x))


class _Attention(nnx.Module):
    def __init__(self, config: LongformerConfig, window: int, *, rngs: nnx.Rngs):
        self.self = LongformerSelfAttention(config, window, rngs=rngs)
        self.output = _DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps, rngs=rngs)


class LongformerLayer(nnx.Module):
    def __init__(self, config: LongformerConfig, window: int, *, rngs: nnx.Rngs):
        self.attention = _Attention(config, window, rngs=rngs)
        self.intermediate = _Intermediate(config, rngs=rngs)
        self.output = _DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps, rngs=rngs)

    def __call__(self, x, key_mask, global_tokens, impl):
        attended = self.attention.self(x, key_mask, global_tokens, impl)
        x = self.attention.output(attended, x)
        return self.output(self.intermediate(x), x)


class _Encoder(nnx.Module):
    def __init__(self, config: LongformerConfig, *, rngs: nnx.Rngs):
        self.layer = nnx.List([LongformerLayer(config, w, rngs=rngs) for w in config.windows])


class LongformerModel(nnx.Module):
    """The Longformer encoder: token ids -> hidden states (batch, seq, hidden)."""

    def __init__(self, config: LongformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = LongformerEmbeddings(config, rngs=rngs)
        self.encoder = _Encoder(config, rngs=rngs)

    def __call__(
        self,
        input_ids,
        *,
        attention_mask=None,
        global_tokens: Sequence[int] = (0,),
        token_type_ids=None,
        impl: str = "auto",
    ):
        """`attention_mask` (batch, seq): 1 for real tokens, 0 for padding (default: ids != pad).

        `global_tokens`: static positions with global attention (e.g. (0,) for CLS, the question's
        positions for QA).
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {input_ids.shape}")
        if input_ids.shape[1] + self.config.pad_token_id >= self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {input_ids.shape[1]} tokens is longer than the position table "
                f"allows ({self.config.max_position_embeddings - self.config.pad_token_id - 1})"
            )
        key_mask = (input_ids != self.config.pad_token_id) if attention_mask is None else attention_mask > 0
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder.layer:
            x = layer(x, key_mask, tuple(int(t) for t in global_tokens), impl)
        return x


class LongformerClassifier(nnx.Module):
    """Encoder + a linear head on one token's state (by default the first, CLS, which is global)."""

    def __init__(self, config: LongformerConfig, num_classes: int, *, rngs: nnx.Rngs):
        self.longformer = LongformerModel(config, rngs=rngs)
        self.classifier = Linear(config.hidden_size, num_classes, rngs=rngs)

    def __call__(self, input_ids, *, global_tokens=(0,), read_token: int = 0, impl="auto", attention_mask=None):
        hidden = self.longformer(input_ids, global_tokens=global_tokens, impl=impl, attention_mask=attention_mask)
        return self.classifier(hidden[:, read_token])


# ------------------------------------------------------------------------------------------------
# Checkpoints in Hugging Face's layout.


def hf_parameter_names(config: LongformerConfig) -> list[str]:
    """The state-dict keys of HF's LongformerModel (without pooler) for `config`."""
    return sorted(to_hf_state_dict(LongformerModel(config, rngs=nnx.Rngs(0))))


def to_hf_state_dict(model: LongformerModel) -> dict[str, np.ndarray]:
    """The model's parameters as {hf_name: numpy array}, ready for safetensors.numpy.save_file."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(str(p) for p in path): np.asarray(v.get_value()) for path, v in flat}


def load_hf_state_dict(model: LongformerModel, tensors: dict[str, np.ndarray], *, strict: bool = True) -> dict:
    """Copies HF-named tensors into `model` (in place, like nnx.update) and returns a load report.

    A `longformer.` prefix is stripped. With `strict`, a missing model parameter or a shape mismatch
    raises ValueError; extra checkpoint tensors (pooler, task heads, position_ids) are only reported.
    """
    tensors = {(k[len("longformer.") :] if k.startswith("longformer.") else k): v for k, v in tensors.items()}
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    names = {".".join(str(p) for p in path): path for path in flat}
    missing = sorted(set(names) - set(tensors))
    if strict and missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
    for name, path in names.items():
        if name not in tensors:
            continue
        value = np.asarray(tensors[name])
        variable = flat[path]
        current = variable.get_value()
        if value.shape != current.shape:
            raise ValueError(f"{name}: checkpoint shape {value.shape} != model shape {current.shape}")
        variable.set_value(jnp.asarray(value, current.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return {"loaded": len(names) - len(missing), "missing": missing, "unused": sorted(set(tensors) - set(names))}


def load_safetensors(model: LongformerModel, path: str | Path, *, strict: bool = True) -> dict:
    """Loads an HF-layout `model.safetensors` file (never pickle) into `model`."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no safetensors file there")
    return load_hf_state_dict(model, load_file(str(path)), strict=strict)


def from_pretrained(directory: str | Path) -> LongformerModel:
    """A model from a local HF directory holding config.json and model.safetensors."""
    import json

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"directory={str(directory)!r} lacks config.json")
    config = LongformerConfig.from_hf_dict(json.loads(config_path.read_text()))
    model = LongformerModel(config, rngs=nnx.Rngs(0))
    load_safetensors(model, directory / "model.safetensors")
    return model


__all__ = [
    "LongformerClassifier",
    "LongformerConfig",
    "LongformerModel",
    "from_pretrained",
    "hf_parameter_names",
    "load_hf_state_dict",
    "load_safetensors",
    "to_hf_state_dict",
]
