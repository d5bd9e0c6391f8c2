"""Block-Skim (Guan et al., AAAI 2022): learn which 32-token blocks of a QA context can be dropped early.

A *skim predictor* sits after chosen encoder layers. It reads the K diagonal (block_size x
block_size) blocks of that layer's attention probabilities, heads as channels, and classifies each
block as keep/skip with the reference CNN:
conv3x3(H->H) -> BatchNorm -> ReLU -> avgpool2 -> conv3x3(H->H) -> BatchNorm -> ReLU -> avgpool2 ->
flatten -> Linear(2).

Training is joint: L = L_QA + alpha * sum_layers CE(skim_logits, block_label; class weights [1, beta]).
A block's label is 1 when it holds any answer token (`label_rule="any"`); the reference repository's
rule, positive only when it holds *more than one* answer token, is `label_rule="more_than_one"`.

Inference (`SkimRunner`): after each predictor layer, keep a block when P(keep) >= threshold; the
blocks holding [CLS] or question tokens are always kept, all-padding blocks never. Only kept tokens
go on to later layers (their position embeddings were added at the input, so order and identity
survive the compaction), and the final start/end logits are scattered back to the original
positions, -inf elsewhere.

Static shapes under jit, the scheme: the forward is cut into *stages* at the predictor layers; each
stage is one jitted pure function (gather kept blocks -> run its layers -> predictor or QA head).
Between stages the host reads P(keep), compacts each example's kept blocks to the front and pads
the batch to the next *bucket* (a multiple of `bucket_blocks` blocks, at least the largest keep
count in the batch); padding blocks are masked out of attention, so a batched result equals the
per-example one. jit compiles one version of a stage per bucket size (at most K / bucket_blocks).
At batch 1 with bucket_blocks=1 nothing is padded: each layer runs on exactly the kept tokens.

This module imports nothing from `models`; the QA model it wraps follows the protocol documented in
`frugal.models.bert_qa` (`encoder.embeddings`, `encoder.layers[i](x, bias) -> (x, probs)`, `qa_outputs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from frugal.transforms.initializers import Conv, Linear

LABEL_RULES = ("any", "more_than_one")
PREDICTOR_FEATURES = ("diagonal", "diagonal+question", "diagonal+question+match")


@dataclasses.dataclass(frozen=True)
class BlockSkimConfig:
    """Where the predictors sit and how they are trained.

    layers: encoder layer indices (0-based) whose attention feeds a predictor; pruning happens after them.
    alpha: weight of the summed skim losses; beta: class weight of the "keep" class.
    predictor_features: "diagonal" is the paper's predictor (the CNN sees only the diagonal blocks);
        "diagonal+question" is our extension: per head, the question->block and block->question attention
        (mean mass and max, see `question_features`) are concatenated to the CNN's pooled features before
        the classifier. Early layers' intra-block attention carries little question signal; these do.
        "diagonal+question+match" (also ours) adds how well the question's tokens are matched in the block
        by the layer's hidden states (`match_features`), sees each block next to its neighbours and
        relative to the best block of the window (`with_block_context`), and classifies with a small MLP
        (`MatchHead`) that also reads the paper CNN's logit. Built for pruning right after layer 0.
    """

    layers: tuple[int, ...] = (0, 1)
    block_size: int = 32
    alpha: float = 0.1
    beta: float = 20.0
    label_rule: str = "any"
    bn_momentum: float = 0.9
    predictor_features: str = "diagonal"

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers or any(not isinstance(i, int) or i < 0 for i in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"layers={self.layers!r} must be distinct non-negative layer indices in ascending order")
        object.__setattr__(self, "layers", layers)
        if not isinstance(self.block_size, int) or self.block_size < 4 or self.block_size % 4:
            raise ValueError(f"block_size={self.block_size!r} must be a positive multiple of 4 (two 2x2 poolings)")
        if not self.alpha >= 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0")
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta} must be > 0")
        if self.label_rule not in LABEL_RULES:
            raise ValueError(f"label_rule={self.label_rule!r} must be one of {LABEL_RULES}")
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum={self.bn_momentum} must be in [0, 1)")
        if self.predictor_features not in PREDICTOR_FEATURES:
            raise ValueError(f"predictor_features={self.predictor_features!r} must be one of {PREDICTOR_FEATURES}")


# --------------------------------------------------------------------------------------------
# Predictor, labels, loss


def diagonal_blocks(probs: jax.Array, block_size: int) -> jax.Array:
    """(B, H, S, S) attention -> (B, K, bs, bs, H): the K diagonal blocks, heads last (NHWC)."""
    b, h, s, s2 = probs.shape
    if s != s2 or s % block_size:
        raise ValueError(
            f"attention shape {probs.shape}: sequence must be square and a multiple of block_size={block_size}"
        )
    k = s // block_size
    blocks = probs.reshape(b, h, k, block_size, k, block_size)
    idx = jnp.arange(k)
    diag = blocks[:, :, idx, :, idx, :]  # advanced indices first: (K, B, H, bs, bs)
    return jnp.transpose(diag, (1, 0, 3, 4, 2))


QUESTION_FEATURES_PER_HEAD = 4
QUESTION_FEATURE_FLOOR = 1e-6
# Question features read the question where it sits, in the first QUESTION_TOKENS positions of a window;
# question tokens past it are ignored (SQuAD questions average ~11 WordPiece tokens, few pass 40).
QUESTION_TOKENS = 64


def question_features(
    probs: jax.Array, question_mask: jax.Array, attention_mask: jax.Array, block_size: int
) -> jax.Array:
    """(B, H, S, S) attention -> (B, K, 4H) question<->block features, heads within each group.

    Per head and block k, in this order: the mean over question queries of the attention mass on block
    k; the largest single question->block-k probability; the mean over block k's real queries of the
    attention mass on question keys; the largest single block-k->question probability. question_mask
    (B, S) marks [CLS], question and first [SEP] (real tokens with token type 0; only those among the
    first QUESTION_TOKENS positions count); attention_mask (B, S) marks real tokens. Blocks without real
    tokens get probability 0 for the block->question pair.
    Each value is returned as log(max(p, 1e-6)): attention probabilities span orders of magnitude
    (1/S is ~0.003), and on the log scale a linear classifier can weigh them next to the CNN features.
    """
    b, h, s, _ = probs.shape
    if s % block_size:
        raise ValueError(f"attention length {s} must be a multiple of block_size={block_size}")
    k, nq = s // block_size, min(s, QUESTION_TOKENS)
    # Only the question's rows and columns of the attention map matter; the question sits at the start of
    # the window, so reading the first nq rows/columns instead of all S costs S/nq times less.
    q = question_mask[:, :nq].astype(probs.dtype)
    real = attention_mask.astype(probs.dtype)
    by_key_block = probs[:, :, :nq, :].reshape(b, h, nq, k, block_size)
    mass_on_block = by_key_block.sum(-1)  # (B, H, nq question queries, K)
    q_rows = q[:, None, :, None]
    q_to_block_mean = (mass_on_block * q_rows).sum(2) / jnp.clip(q.sum(-1), 1.0)[:, None, None]
    q_to_block_max = jnp.where(q_rows > 0, by_key_block.max(-1), 0.0).max(2)
    to_question = probs[..., :nq]  # (B, H, S queries, nq question keys)
    mass_on_question = jnp.einsum("bhij,bj->bhi", to_question, q).reshape(b, h, k, block_size)
    max_on_question = jnp.where(q[:, None, None, :] > 0, to_question, 0.0).max(-1).reshape(b, h, k, block_size)
    real_blocks = real.reshape(b, 1, k, block_size)
    block_to_q_mean = (mass_on_question * real_blocks).sum(-1) / jnp.clip(real_blocks.sum(-1), 1.0)
    block_to_q_max = jnp.where(real_blocks > 0, max_on_question, 0.0).max(-1)
    feats = jnp.concatenate([q_to_block_mean, q_to_block_max, block_to_q_mean, block_to_q_max], axis=1)
    return jnp.log(jnp.maximum(jnp.transpose(feats, (0, 2, 1)), QUESTION_FEATURE_FLOOR))  # (B, K, 4H)


def question_mask_from(attention_mask: jax.Array, token_type_ids: jax.Array) -> jax.Array:
    """Real tokens of the first segment ([CLS] question [SEP]) as a (B, S) bool mask."""
    return (jnp.asarray(attention_mask) > 0) & (jnp.asarray(token_type_ids) == 0)


MATCH_TOP_K = 8


def match_features(
    hidden: jax.Array, question_mask: jax.Array, attention_mask: jax.Array, block_size: int, top_k: int = MATCH_TOP_K
) -> jax.Array:
    """(B, S, D) hidden states -> (B, K, top_k): how well block k matches the question, token by token.

    For every question token (question_mask without [CLS], among the first QUESTION_TOKENS positions,
    where the question sits) the best cosine similarity with any real context token of block k; per block
    the `top_k` largest of these, descending, -1 where the question has fewer tokens. An early layer's
    hidden states still carry token identity, so the block that repeats the question's rare words (the
    entity asked about) stands out long before attention links question and answer.
    """
    b, s, _ = hidden.shape
    if s % block_size:
        raise ValueError(f"sequence length {s} must be a multiple of block_size={block_size}")
    k, nq = s // block_size, min(s, QUESTION_TOKENS)
    unit = hidden / jnp.clip(jnp.linalg.norm(hidden, axis=-1, keepdims=True), 1e-6)
    sim = jnp.einsum("bqd,bkd->bqk", unit[:, :nq], unit)  # (B, nq, S)
    context = (attention_mask > 0) & ~question_mask
    sim = jnp.where(context[:, None, :], sim, -1.0)
    best = sim.reshape(b, nq, k, block_size).max(-1)  # (B, nq, K)
    queries = question_mask[:, :nq] & (jnp.arange(nq) > 0)[None, :]
    best = jnp.where(queries[:, :, None], best, -1.0)
    top = jax.lax.top_k(jnp.swapaxes(best, 1, 2), min(top_k, nq))[0]
    if top.shape[-1] < top_k:
        top = jnp.pad(top, ((0, 0), (0, 0), (0, top_k - top.shape[-1])), constant_values=-1.0)
    return top


def with_block_context(feats: jax.Array, valid: jax.Array) -> jax.Array:
    """(B, K, D) per-block features -> (B, K, 6D): each block with its window and its neighbours.

    Per block: its features, the same minus their maximum over the window's real blocks (is this the
    best-matching block?), and both of those for the previous and the next block (zeros past the ends):
    the answer often sits in the block after the one that names the question's subject. Neighbours are
    adjacent slots of the sequence the layer saw (the original neighbours at the first pruning layer).
    """
    best = jnp.where(valid[..., None] > 0, feats, -jnp.inf).max(1, keepdims=True)
    rel = jnp.concatenate([feats, feats - jnp.where(jnp.isfinite(best), best, 0.0)], -1)
    zero = jnp.zeros_like(rel[:, :1])
    prev = jnp.concatenate([zero, rel[:, :-1]], 1)
    nxt = jnp.concatenate([rel[:, 1:], zero], 1)
    return jnp.concatenate([rel, prev, nxt], -1)


class MatchHead(nnx.Module):
    """Standardize (statistics fixed when the head is fitted) -> Linear -> ReLU -> Linear(2)."""

    def __init__(self, in_features: int, hidden: int = 64, *, rngs: nnx.Rngs):
        self.mean = nnx.BatchStat(jnp.zeros(in_features))
        self.scale = nnx.BatchStat(jnp.ones(in_features))
        self.hidden = Linear(in_features, hidden, rngs=rngs)
        self.out = Linear(hidden, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = (x - self.mean[...]) / self.scale[...]
        return self.out(jax.nn.relu(self.hidden(x)))


def match_base_width(num_heads: int, top_k: int = MATCH_TOP_K) -> int:
    """Per-block features the match head expands: CNN logit margin, question features, match features."""
    return 1 + QUESTION_FEATURES_PER_HEAD * num_heads + top_k


class SkimPredictor(nnx.Module):
    """The reference CNN: per diagonal block, logits for (skip, keep); optionally with question features."""

    def __init__(
        self, num_heads: int, block_size: int = 32, *, momentum: float = 0.9, features: str = "diagonal", rngs: nnx.Rngs
    ):
        if features not in PREDICTOR_FEATURES:
            raise ValueError(f"features={features!r} must be one of {PREDICTOR_FEATURES}")
        h = num_heads
        self.block_size = block_size
        self.features = features
        self.conv1 = Conv(h, h, (3, 3), padding="SAME", rngs=rngs)
        self.norm1 = nnx.BatchNorm(h, momentum=momentum, rngs=rngs)
        self.conv2 = Conv(h, h, (3, 3), padding="SAME", rngs=rngs)
        self.norm2 = nnx.BatchNorm(h, momentum=momentum, rngs=rngs)
        extra = QUESTION_FEATURES_PER_HEAD * h if features == "diagonal+question" else 0
        self.classifier = Linear(h * (block_size // 4) ** 2 + extra, 2, rngs=rngs)
        if features == "diagonal+question+match":
            self.match_head = MatchHead(6 * match_base_width(h), rngs=rngs)

    def __call__(
        self,
        probs: jax.Array,
        question_mask: jax.Array | None = None,
        attention_mask: jax.Array | None = None,
        hidden: jax.Array | None = None,
    ) -> jax.Array:
        """(B, H, S, S) attention probabilities -> (B, K, 2) logits.

        question_mask / attention_mask (B, S) are required with features="diagonal+question" and
        "diagonal+question+match"; the latter also needs the layer's output hidden states (B, S, D).
        """
        if self.features == "diagonal+question+match":
            return self.match_head(
                with_block_context(
                    self.match_base(probs, question_mask, attention_mask, hidden),
                    block_valid(attention_mask, self.block_size),
                )
            )
        blocks = diagonal_blocks(probs, self.block_size)
        b, k = blocks.shape[:2]
        extra = None
        if self.features == "diagonal+question":
            if question_mask is None or attention_mask is None:
                raise ValueError("a 'diagonal+question' predictor needs question_mask and attention_mask")
            extra = question_features(probs, question_mask, attention_mask, self.block_size)
            extra = extra.reshape(b * k, -1)
        flat = blocks.reshape((b * k,) + blocks.shape[2:])
        return self.classify_blocks(flat, extra).reshape(b, k, 2)

    def match_base(self, probs, question_mask, attention_mask, hidden) -> jax.Array:
        """(B, K, match_base_width) what the match head expands: the CNN's keep-minus-skip logit (the
        paper's predictor, classifier over the pooled features only), question and match features."""
        if question_mask is None or attention_mask is None or hidden is None:
            raise ValueError("a 'diagonal+question+match' predictor needs question_mask, attention_mask and hidden")
        blocks = diagonal_blocks(probs, self.block_size)
        b, k = blocks.shape[:2]
        cnn = self.classifier(self.pooled(blocks.reshape((b * k,) + blocks.shape[2:]))).reshape(b, k, 2)
        return jnp.concatenate(
            [
                cnn[..., 1:] - cnn[..., :1],
                question_features(probs, question_mask, attention_mask, self.block_size),
                match_features(hidden, question_mask, attention_mask, self.block_size),
            ],
            -1,
        )

    def pooled(self, blocks: jax.Array) -> jax.Array:
        """(N, bs, bs, H) diagonal blocks -> (N, H * (bs/4)^2) the CNN's pooled features."""
        x = nnx.avg_pool(jax.nn.relu(self.norm1(self.conv1(blocks))), (2, 2), strides=(2, 2))
        x = nnx.avg_pool(jax.nn.relu(self.norm2(self.conv2(x))), (2, 2), strides=(2, 2))
        return x.reshape(x.shape[0], -1)

    def classify_blocks(self, blocks: jax.Array, extra: jax.Array | None = None) -> jax.Array:
        """(N, bs, bs, H) diagonal blocks (+ (N, 4H) question features) -> (N, 2) logits."""
        x = self.pooled(blocks)
        if self.features == "diagonal+question":
            if extra is None:
                raise ValueError("a 'diagonal+question' predictor needs the question features (extra)")
            x = jnp.concatenate([x, extra.astype(x.dtype)], axis=-1)
        return self.classifier(x)


def block_labels(start_positions, end_positions, seq_len: int, block_size: int = 32, *, rule: str = "any") -> jax.Array:
    """(B, K) int labels: 1 for blocks holding answer tokens [start, end] (see `label_rule`).

    A window whose answer is [CLS] (start == end == 0: no answer in it) has no positive block.
    """
    if rule not in LABEL_RULES:
        raise ValueError(f"rule={rule!r} must be one of {LABEL_RULES}")
    if seq_len % block_size:
        raise ValueError(f"seq_len={seq_len} must be a multiple of block_size={block_size}")
    if not isinstance(start_positions, jax.core.Tracer) and not isinstance(end_positions, jax.core.Tracer):
        starts, ends = np.asarray(start_positions), np.asarray(end_positions)
        wrong = (starts > ends) & (ends > 0)
        if np.any(wrong):
            i = int(np.argmax(wrong))
            raise ValueError(
                f"start_positions[{i}]={int(starts[i])} > end_positions[{i}]={int(ends[i])}: an answer span "
                "must have start <= end (start == end == 0 marks a window without the answer)"
            )
    start = jnp.asarray(start_positions)[:, None]
    end = jnp.asarray(end_positions)[:, None]
    pos = jnp.arange(seq_len)[None, :]
    is_answer = (pos >= start) & (pos <= end) & (end > 0)
    count = is_answer.reshape(is_answer.shape[0], seq_len // block_size, block_size).sum(-1)
    return (count > (1 if rule == "more_than_one" else 0)).astype(jnp.int32)


def skim_loss(logits: jax.Array, labels: jax.Array, valid: jax.Array, beta: float) -> jax.Array:
    """Class-weighted cross-entropy (weights [1, beta]) averaged like torch: sum(w * ce) / sum(w)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    w = jnp.where(labels > 0, beta, 1.0) * valid
    return (w * ce).sum() / jnp.clip(w.sum(), 1e-9)


def block_valid(attention_mask: jax.Array, block_size: int) -> jax.Array:
    """(B, K) 1.0 for blocks holding at least one real token."""
    b, s = attention_mask.shape
    return (attention_mask.reshape(b, s // block_size, block_size).sum(-1) > 0).astype(jnp.float32)


class BlockSkimQA(nnx.Module):
    """A QA model plus one skim predictor per chosen layer (made by `apply_block_skim`)."""

    def __init__(self, qa_model: nnx.Module, config: BlockSkimConfig, *, rngs: nnx.Rngs):
        self.qa_model = qa_model
        self.skim_config = config
        heads = qa_model.config.num_attention_heads
        self.predictors = nnx.List(
            [
                SkimPredictor(
                    heads, config.block_size, momentum=config.bn_momentum, features=config.predictor_features, rngs=rngs
                )
                for _ in config.layers
            ]
        )

    def __call__(self, input_ids, attention_mask, token_type_ids):
        """Unpruned forward: (start_logits, end_logits, skim_logits tuple of (B, K, 2) per predictor layer)."""
        enc = self.qa_model.encoder
        if input_ids.ndim != 2 or input_ids.shape[1] > enc.config.max_position_embeddings:
            raise ValueError(
                f"input_ids must be (batch, seq) with seq <= max_position_embeddings="
                f"{enc.config.max_position_embeddings}, got {input_ids.shape}; window longer contexts"
            )
        x = enc.embeddings(input_ids, token_type_ids)
        bias = _bias(attention_mask)
        question = question_mask_from(attention_mask, token_type_ids)
        skim = []
        for i, layer in enumerate(enc.layers):
            x, probs = layer(x, bias)
            if i in self.skim_config.layers:
                predictor = self.predictors[self.skim_config.layers.index(i)]
                skim.append(predictor(probs, question, attention_mask, hidden=x))
        logits = self.qa_model.qa_outputs(x)
        return logits[..., 0], logits[..., 1], tuple(skim)


def apply_block_skim(qa_model: nnx.Module, config: BlockSkimConfig, *, seed: int = 0) -> BlockSkimQA:
    """A new BlockSkimQA around a copy of `qa_model` (the input is not changed)."""
    n_layers = len(qa_model.encoder.layers)
    if config.layers[-1] >= n_layers - 1:
        raise ValueError(
            f"BlockSkimConfig.layers={config.layers}: the last predictor must sit before the last "
            f"layer (indices < {n_layers - 1}), otherwise it prunes nothing"
        )
    return BlockSkimQA(nnx.clone(qa_model), config, rngs=nnx.Rngs(seed))


def joint_loss(model: BlockSkimQA, batch: dict, qa_loss_fn) -> tuple[jax.Array, dict]:
    """L_QA + alpha * sum of the per-layer weighted skim cross-entropies; also returns the parts."""
    cfg = model.skim_config
    start, end, skim = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    l_qa = qa_loss_fn(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
    labels = block_labels(
        batch["start_positions"],
        batch["end_positions"],
        batch["input_ids"].shape[1],
        cfg.block_size,
        rule=cfg.label_rule,
    )
    valid = block_valid(batch["attention_mask"], cfg.block_size)
    l_skim = sum(skim_loss(logits, labels, valid, cfg.beta) for logits in skim)
    return l_qa + cfg.alpha * l_skim, {"qa_loss": l_qa, "skim_loss": l_skim}


# --------------------------------------------------------------------------------------------
# Pruned inference


def _bias(mask):
    return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


@dataclasses.dataclass
class SkimResult:
    """Logits at the original positions (pruned: -inf) and what each layer processed."""

    start_logits: np.ndarray  # (B, S)
    end_logits: np.ndarray
    tokens_per_layer: np.ndarray  # (B, num_layers) real kept tokens each layer processed, per example
    padded_tokens_per_layer: np.ndarray  # (num_layers,) tokens per row after bucketing (what was computed)
    kept_blocks: list[np.ndarray]  # per predictor: (B, K) bool over the original blocks


class SkimRunner:
    """Jitted staged inference of a BlockSkimQA (see the module docstring for the static-shape scheme)."""

    def __init__(self, model: BlockSkimQA, *, layers: Sequence[int] | None = None, bucket_blocks: int = 1):
        """layers: which of the trained predictors prune at inference (default all of them)."""
        if not isinstance(bucket_blocks, int) or bucket_blocks < 1:
            raise ValueError(f"bucket_blocks={bucket_blocks!r} must be a positive int")
        trained = model.skim_config.layers
        layers = tuple(trained if layers is None else layers)
        if not layers or any(i not in trained for i in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f"layers={layers!r} must be an ascending subset of the trained predictor layers {trained}")
        model = nnx.clone(model)
        model.eval()
        self.graphdef, self.state = nnx.split(model)
        self.config: BlockSkimConfig = model.skim_config
        self.layers = layers
        self._predictor_index = [trained.index(i) for i in layers]
        self.num_layers = len(model.qa_model.encoder.layers)
        self.bucket_blocks = bucket_blocks
        bounds = [0] + [i + 1 for i in layers] + [self.num_layers]
        self.stages = list(zip(bounds[:-1], bounds[1:]))  # layer ranges; stage j < last ends at a predictor
        self._stage = jax.jit(self._stage_fn, static_argnums=(0, 1, 2))
        self._full = jax.jit(self._full_fn)

    # Pure functions over (state, arrays); the static ints pick the stage.
    def _stage_fn(self, first, last, stage_index, state, x_or_ids, gather, mask, types):
        model = nnx.merge(self.graphdef, state)
        enc = model.qa_model.encoder
        if first == 0:
            x = enc.embeddings(x_or_ids, types)
        else:
            x = x_or_ids if gather is None else jnp.take_along_axis(x_or_ids, gather[..., None], axis=1)
        bias = _bias(mask)
        probs = None
        for i in range(first, last):
            x, probs = enc.layers[i](x, bias)
        if last == self.num_layers:
            logits = model.qa_model.qa_outputs(x)
            return x, logits[..., 0], logits[..., 1]
        predictor = model.predictors[self._predictor_index[stage_index]]
        logits = predictor(probs, question_mask_from(mask, types), mask, hidden=x)
        keep_prob = jax.nn.softmax(logits, axis=-1)[..., 1]
        return x, keep_prob, None

    def _full_fn(self, state, ids, mask, types):
        model = nnx.merge(self.graphdef, state)
        return model.qa_model(ids, mask, types)

    def full(self, input_ids, attention_mask, token_type_ids):
        """The same model without skimming: one jitted forward, (start_logits, end_logits) as NumPy."""
        start, end = self._full(
            self.state, jnp.asarray(input_ids), jnp.asarray(attention_mask), jnp.asarray(token_type_ids)
        )
        return np.asarray(start), np.asarray(end)

    def __call__(
        self, input_ids, attention_mask, token_type_ids, question_length, threshold: float | Sequence[float]
    ) -> SkimResult:
        """Pruned forward of a batch; threshold 0 keeps every real block (same answers as `full`).

        threshold: one value for every pruning layer, or one per pruning layer (in `layers` order).

        question_length: (B,) tokens of [CLS] question [SEP] per row; the blocks they touch are always kept.
        """
        thresholds = (
            tuple(float(t) for t in threshold)
            if isinstance(threshold, (tuple, list))
            else (float(threshold),) * len(self.layers)
        )
        if len(thresholds) != len(self.layers) or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(
                f"threshold={threshold} must be in [0, 1], or one such value per pruning layer {self.layers}"
            )
        ids = np.asarray(input_ids)
        mask = np.asarray(attention_mask).astype(np.int32)
        types = np.asarray(token_type_ids).astype(np.int32)
        bs = self.config.block_size
        if ids.ndim != 2 or mask.shape != ids.shape or types.shape != ids.shape:
            raise ValueError(
                f"input_ids, attention_mask, token_type_ids must share one (batch, seq) shape, got "
                f"{ids.shape}, {mask.shape}, {types.shape}"
            )
        b, s = ids.shape
        if s % bs:
            raise ValueError(f"sequence length {s} must be a multiple of block_size={bs}; pad windows to it")
        k0 = s // bs
        qlen = np.asarray(question_length).reshape(b)
        blocks = np.tile(np.arange(k0), (b, 1))  # which original block each current block slot holds
        real = mask.reshape(b, k0, bs).max(-1) > 0  # slot holds at least one real token
        protected = np.arange(k0)[None, :] * bs < qlen[:, None]  # slot holds [CLS] or question tokens
        positions = np.tile(np.arange(s), (b, 1))  # original position of each current token
        x, gather, cur_mask = jnp.asarray(ids), None, mask
        tokens = np.zeros((b, self.num_layers), np.int64)
        padded = np.zeros(self.num_layers, np.int64)
        kept_record = []
        for j, (first, last) in enumerate(self.stages):
            tokens[:, first:last] = (cur_mask > 0).sum(-1)[:, None]
            padded[first:last] = cur_mask.shape[1]
            x, out_a, out_b = self._stage(
                first,
                last,
                j,
                self.state,
                x,
                None if gather is None else jnp.asarray(gather),
                jnp.asarray(cur_mask),
                jnp.asarray(types),
            )
            if last == self.num_layers:
                break
            keep = ((np.asarray(out_a) >= thresholds[j]) | protected) & real
            record = np.zeros((b, k0), bool)
            np.put_along_axis(record, blocks, keep, axis=1)
            kept_record.append(record)
            if keep.all():
                gather = None  # nothing pruned in this batch: the next stage sees the same tokens
                continue
            k_new = max(int(keep.sum(-1).max()), 1)
            bucket = min(-(-k_new // self.bucket_blocks) * self.bucket_blocks, keep.shape[1])
            order = np.argsort(~keep, axis=1, kind="stable")[:, :bucket]  # kept slots first, in original order
            slot_kept = np.take_along_axis(keep, order, axis=1)
            gather = (order[:, :, None] * bs + np.arange(bs)).reshape(b, bucket * bs).astype(np.int32)
            cur_mask = np.take_along_axis(cur_mask, gather, axis=1) * np.repeat(slot_kept, bs, axis=1)
            types = np.take_along_axis(types, gather, axis=1)
            positions = np.take_along_axis(positions, gather, axis=1)
            blocks = np.take_along_axis(blocks, order, axis=1)
            protected = np.take_along_axis(protected, order, axis=1)
            real = slot_kept
        # Scatter back: real kept tokens get their logits, pruned positions and padding -inf.
        start_c, end_c = np.asarray(out_a), np.asarray(out_b)
        start = np.full((b, s), -np.inf, np.float32)
        end = np.full((b, s), -np.inf, np.float32)
        ok = cur_mask > 0
        rows = np.broadcast_to(np.arange(b)[:, None], ok.shape)
        start[rows[ok], positions[ok]] = start_c[ok]
        end[rows[ok], positions[ok]] = end_c[ok]
        return SkimResult(start, end, tokens, padded, kept_record)


# --------------------------------------------------------------------------------------------
# FLOPs from the tokens each layer processes (2 FLOPs per multiply-add, as MACs x 2)


def encoder_layer_flops(tokens: int, hidden: int, intermediate: int) -> int:
    """One post-norm transformer layer on `tokens` tokens: Q/K/V/O and FFN GEMMs plus the two attention GEMMs."""
    n = int(tokens)
    return 2 * n * hidden * (4 * hidden + 2 * intermediate) + 2 * 2 * n * n * hidden


def predictor_flops(
    num_blocks: int, num_heads: int, block_size: int = 32, *, features: str = "diagonal", hidden: int = 384
) -> int:
    """One predictor on `num_blocks` blocks: the skim CNN (two 3x3 convolutions and the classifier), plus
    for our extensions the question features (four passes over the attention probabilities), the match
    features (question x sequence similarities of `hidden`-wide states) and the match head's MLP."""
    h, s, k = num_heads, block_size, int(num_blocks)
    per_block = 2 * 9 * h * h * (s * s + (s // 2) ** 2) + 2 * h * (s // 4) ** 2 * 2
    total = k * per_block
    seq = k * s
    if features in ("diagonal+question", "diagonal+question+match"):
        total += 4 * h * seq * min(seq, QUESTION_TOKENS) + k * 2 * QUESTION_FEATURES_PER_HEAD * h * 2
    if features == "diagonal+question+match":
        width = 6 * match_base_width(h)
        total += 2 * min(seq, QUESTION_TOKENS) * seq * hidden + 3 * seq * hidden  # similarities, norms
        total += k * 2 * (width * 64 + 64 * 2)
    return total


def skim_flops(
    tokens_per_layer: Sequence[int],
    blocks_at_predictors: Sequence[int],
    *,
    hidden: int,
    intermediate: int,
    num_heads: int,
    block_size: int = 32,
    features: str = "diagonal",
) -> int:
    """Encoder + predictors + span head FLOPs for one example, given what each layer actually processed."""
    total = sum(encoder_layer_flops(n, hidden, intermediate) for n in tokens_per_layer)
    total += sum(
        predictor_flops(k, num_heads, block_size, features=features, hidden=hidden) for k in blocks_at_predictors
    )
    return total + 2 * int(tokens_per_layer[-1]) * hidden * 2
