"""CTT-Net and its fusion baselines in Flax NNX: post-operative visual acuity from two views + pre-op VA.

CTT-Net (Wang et al., IEEE BIBM 2022, arXiv 2212.05794; reference code
github.com/wjh892521292/Cataract_OCT, `models_new/cross_token_attention_c.py`) fuses one feature token
per OCT view with three tokens made from the scalar pre-operative acuity z: a horizontal-VA token, a
vertical-VA token and a global-VA token. Each view runs its own small transformer over
[view feature, view-VA token, global token]; between rounds the two view-VA tokens are *swapped*
between the streams. A view's feature token therefore never attends to the other view's feature
token: what crosses between views goes through the VA tokens (the "restricted attention flow").
The prediction is read from the two VA tokens and bounded like the reference:
post = sigmoid(delta + z) * 1.5.

Every head here maps per-view feature vectors `(B, F)` and the pre-op decimal VA `(B,)` to the
post-op decimal VA `(B,)`, so the fusion rules are compared on the same features (frozen-feature
protocol) or behind the same backbones (`TwoViewModel`, end to end):

- `CrossTokenHead`: CTT-Net; `variant="ctt"` (4 rounds, global token fixed, bounded output) or
  `"ctt_f"` (6 rounds, the global token updated per stream, unbounded residual output), plus the
  ablations `va_tokens=False` (learned constant tokens: pre-op VA enters only at the output) and
  `swap=False` (the rounds never exchange tokens: the views meet only at the read-out).
- `FullAttentionHead`: the same five tokens under unrestricted attention, depth 2 + rounds.
- `LateFusionHead`: concatenated projections (+ the encoded pre-op VA) through an MLP.
- `SingleViewHead`: one view (+ the pre-op VA).

Heads that see the pre-op VA use the reference's bounded residual, sigmoid(delta + z) * 1.5; heads
without it predict sigmoid(delta) * 1.5. Attention weights come back from `attention_maps` for the
attention-flow analysis.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.models.resnet import ResNet
from frugal.transforms.initializers import Linear, normal

MAX_VA = 1.5  # the reference bounds its output to (0, 1.5) decimal VA
CTT_TOKENS = ("feature_h", "va_h", "feature_v", "va_v", "global")


def bounded_acuity(delta: jax.Array, pre: jax.Array | None) -> jax.Array:
    """The reference's output map: sigmoid(delta + pre) * 1.5 (sigmoid(delta) * 1.5 without pre)."""
    return jax.nn.sigmoid(delta + (0.0 if pre is None else pre)) * MAX_VA


def _check_inputs(feat_h, feat_v, pre):
    if feat_h.ndim != 2 or feat_v.ndim != 2 or feat_h.shape[0] != feat_v.shape[0]:
        raise ValueError(f"view features must be (batch, features) with one batch, got {feat_h.shape}, {feat_v.shape}")
    if pre.shape != (feat_h.shape[0],):
        raise ValueError(f"pre_va must be (batch,) = ({feat_h.shape[0]},), got {pre.shape}")


class TokenAttention(nnx.Module):
    """Multi-head self-attention over a few tokens, returning its weights as well.

    `scale="dim"` multiplies the logits by dim**-0.5, the reference's choice (its heads are
    dim_head = inner_dim / heads wide, so this is not the usual dim_head**-0.5); `"head"` uses the
    standard dim_head**-0.5.
    """

    def __init__(self, dim, *, heads, inner_dim, dropout, scale: Literal["dim", "head"], rngs: nnx.Rngs):
        if inner_dim % heads:
            raise ValueError(f"inner_dim={inner_dim} must be divisible by heads={heads}")
        if scale not in ("dim", "head"):
            raise ValueError(f"attention scale={scale!r}: use 'dim' (reference) or 'head'")
        self.heads = heads
        self.scale = dim**-0.5 if scale == "dim" else (inner_dim // heads) ** -0.5
        self.qkv = Linear(dim, 3 * inner_dim, use_bias=False, rngs=rngs)
        self.out = Linear(inner_dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        b, n, _ = x.shape
        q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
        split = lambda t: t.reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        weights = jax.nn.softmax(jnp.einsum("bhid,bhjd->bhij", q, k) * self.scale, axis=-1)
        y = jnp.einsum("bhij,bhjd->bhid", weights, v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        return self.dropout(self.out(y)), weights


class TokenBlock(nnx.Module):
    """Pre-norm transformer block: x + attn(LN x), then x + MLP(LN x) with GELU (ViT style)."""

    def __init__(self, dim, *, heads, inner_dim, mlp_dim, dropout, scale, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = TokenAttention(dim, heads=heads, inner_dim=inner_dim, dropout=dropout, scale=scale, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = Linear(dim, mlp_dim, rngs=rngs)
        self.mlp_out = Linear(mlp_dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        y, weights = self.attention(self.norm1(x))
        x = x + y
        x = x + self.dropout(self.mlp_out(self.dropout(jax.nn.gelu(self.mlp_in(self.norm2(x))))))
        return x, weights


class TokenTransformer(nnx.Module):
    """`depth` TokenBlocks; returns the tokens and each block's attention weights (B, heads, n, n)."""

    def __init__(self, dim, depth, *, heads, inner_dim, mlp_dim, dropout, scale, rngs: nnx.Rngs):
        if depth < 1:
            raise ValueError(f"depth={depth} must be >= 1")
        self.blocks = nnx.List(
            [
                TokenBlock(
                    dim, heads=heads, inner_dim=inner_dim, mlp_dim=mlp_dim, dropout=dropout, scale=scale, rngs=rngs
                )
                for _ in range(depth)
            ]
        )

    def __call__(self, x):
        maps = []
        for block in self.blocks:
            x, weights = block(x)
            maps.append(weights)
        return x, maps


class _Readout(nnx.Module):
    """LN -> Linear(dim, dim) -> ReLU -> Linear(dim, 1): the reference's `fc` + `top`, giving delta."""

    def __init__(self, dim, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.fc = Linear(dim, dim, rngs=rngs)
        self.top = Linear(dim, 1, rngs=rngs)

    def __call__(self, pooled):
        return self.top(jax.nn.relu(self.fc(self.norm(pooled))))[:, 0]


class _VaTokens(nnx.Module):
    """The three pre-op VA tokens: Linear(1, dim) encoders of z, or learned constants (ablation)."""

    def __init__(self, dim, *, from_va: bool, rngs: nnx.Rngs):
        self.from_va = from_va
        if from_va:
            self.encoders = nnx.List([Linear(1, dim, rngs=rngs) for _ in range(3)])
        else:
            self.constants = nnx.Param(normal(0.02)(rngs.params(), (3, dim)))

    def __call__(self, pre):
        if self.from_va:
            return [enc(pre[:, None])[:, None, :] for enc in self.encoders]
        b = pre.shape[0]
        return [jnp.broadcast_to(self.constants[...][i], (b, 1, self.constants.shape[1])) for i in range(3)]


class CrossTokenHead(nnx.Module):
    """CTT-Net's fusion: two view streams that exchange only their VA tokens (see the module docstring).

    Reference defaults: dim 128, 4 heads over an inner width of 512, MLP 4 x dim, dropout 0.1, a
    depth-2 first stage per view, then `rounds` swaps each followed by one depth-1 block per view
    whose weights are shared across rounds (the reference applies the same `Transformer_x/_y`).
    """

    uses_pre = True

    def __init__(
        self,
        feature_dim: int,
        *,
        dim: int = 128,
        heads: int = 4,
        inner_dim: int = 512,
        dropout: float = 0.1,
        rounds: int | None = None,
        variant: Literal["ctt", "ctt_f"] = "ctt",
        va_tokens: bool = True,
        swap: bool = True,
        output: Literal["bounded", "residual"] | None = None,
        attention_scale: Literal["dim", "head"] = "dim",
        rngs: nnx.Rngs,
    ):
        if variant not in ("ctt", "ctt_f"):
            raise ValueError(f"variant={variant!r}: use 'ctt' or 'ctt_f'")
        rounds = (4 if variant == "ctt" else 6) if rounds is None else rounds
        if rounds < 0:
            raise ValueError(f"rounds={rounds} must be >= 0")
        output = ("bounded" if variant == "ctt" else "residual") if output is None else output
        if output not in ("bounded", "residual"):
            raise ValueError(f"output={output!r}: use 'bounded' (sigmoid(delta + z) * 1.5) or 'residual' (delta + z)")
        self.variant, self.rounds, self.swap, self.output = variant, rounds, swap, output
        kw = dict(heads=heads, inner_dim=inner_dim, mlp_dim=4 * dim, dropout=dropout, scale=attention_scale, rngs=rngs)
        self.proj_h = Linear(feature_dim, dim, rngs=rngs)
        self.proj_v = Linear(feature_dim, dim, rngs=rngs)
        self.va = _VaTokens(dim, from_va=va_tokens, rngs=rngs)
        self.stage_h = TokenTransformer(dim, 2, **kw)
        self.stage_v = TokenTransformer(dim, 2, **kw)
        self.round_h = TokenTransformer(dim, 1, **kw)
        self.round_v = TokenTransformer(dim, 1, **kw)
        self.readout = _Readout(dim, rngs=rngs)

    def _stream(self, transformer, feature, va, glob):
        # ctt: [feature, va, global], the global token is read but never replaced;
        # ctt_f: [feature, global, va], the stream keeps its own updated global token.
        if self.variant == "ctt":
            tokens, maps = transformer(jnp.concatenate([feature, va, glob], axis=1))
            return tokens[:, :1], tokens[:, 1:2], glob, maps
        tokens, maps = transformer(jnp.concatenate([feature, glob, va], axis=1))
        return tokens[:, :1], tokens[:, 2:3], tokens[:, 1:2], maps

    def forward(self, feat_h, feat_v, pre):
        """(post, record): record lists per block which tokens each stream held and its weights."""
        _check_inputs(feat_h, feat_v, pre)
        f_h, f_v = self.proj_h(feat_h)[:, None, :], self.proj_v(feat_v)[:, None, :]
        z_h, z_v, glob = self.va(pre)
        g_h = g_v = glob
        owner_h, owner_v = "va_h", "va_v"  # which VA token each stream holds now
        record = []
        f_h, z_h, g_h, maps_h = self._stream(self.stage_h, f_h, z_h, g_h)
        f_v, z_v, g_v, maps_v = self._stream(self.stage_v, f_v, z_v, g_v)
        record.append((("feature_h", owner_h), maps_h, ("feature_v", owner_v), maps_v))
        for _ in range(self.rounds):
            if self.swap:
                z_h, z_v = z_v, z_h
                owner_h, owner_v = owner_v, owner_h
            f_h, z_h, g_h, maps_h = self._stream(self.round_h, f_h, z_h, g_h)
            f_v, z_v, g_v, maps_v = self._stream(self.round_v, f_v, z_v, g_v)
            record.append((("feature_h", owner_h), maps_h, ("feature_v", owner_v), maps_v))
        pooled = ((z_h + z_v) / 2)[:, 0]
        delta = self.readout(pooled)
        post = bounded_acuity(delta, pre) if self.output == "bounded" else delta + pre
        return post, record

    def __call__(self, feat_h, feat_v, pre):
        return self.forward(feat_h, feat_v, pre)[0]

    def attention_maps(self, feat_h, feat_v, pre) -> jax.Array:
        """Attention mass between the five CTT_TOKENS, averaged over blocks, heads and the batch:
        entry [i, j] is how much token i reads token j (0 where the architecture forbids it)."""
        _, record = self.forward(feat_h, feat_v, pre)
        index = {name: i for i, name in enumerate(CTT_TOKENS)}
        flow = jnp.zeros((5, 5))
        for (feat_name_h, va_h), maps_h, (feat_name_v, va_v), maps_v in record:
            for (feat_name, va_name), maps in (((feat_name_h, va_h), maps_h), ((feat_name_v, va_v), maps_v)):
                order = [feat_name, va_name, "global"] if self.variant == "ctt" else [feat_name, "global", va_name]
                ids = jnp.array([index[n] for n in order])
                for w in maps:
                    mean = w.mean(axis=(0, 1))  # (3, 3)
                    flow = flow.at[ids[:, None], ids[None, :]].add(mean)
        # each token sits in one stream per block; normalize rows to sum to 1
        return flow / jnp.maximum(flow.sum(axis=1, keepdims=True), 1e-9)


class FullAttentionHead(nnx.Module):
    """The five CTT tokens [feature_h, va_h, feature_v, va_v, global] under full self-attention.

    Depth 2 + rounds (6 by default, the reference's fully-attention baseline depth), read out like
    CTT-Net from the mean of the two VA tokens, so only the attention pattern differs.
    """

    uses_pre = True

    def __init__(
        self,
        feature_dim: int,
        *,
        dim: int = 128,
        heads: int = 4,
        inner_dim: int = 512,
        dropout: float = 0.1,
        depth: int = 6,
        attention_scale: Literal["dim", "head"] = "dim",
        rngs: nnx.Rngs,
    ):
        kw = dict(heads=heads, inner_dim=inner_dim, mlp_dim=4 * dim, dropout=dropout, scale=attention_scale, rngs=rngs)
        self.proj_h = Linear(feature_dim, dim, rngs=rngs)
        self.proj_v = Linear(feature_dim, dim, rngs=rngs)
        self.va = _VaTokens(dim, from_va=True, rngs=rngs)
        self.position = nnx.Param(normal(0.02)(rngs.params(), (5, dim)))
        self.transformer = TokenTransformer(dim, depth, **kw)
        self.readout = _Readout(dim, rngs=rngs)

    def forward(self, feat_h, feat_v, pre):
        _check_inputs(feat_h, feat_v, pre)
        z_h, z_v, glob = self.va(pre)
        tokens = jnp.concatenate([self.proj_h(feat_h)[:, None], z_h, self.proj_v(feat_v)[:, None], z_v, glob], axis=1)
        tokens, maps = self.transformer(tokens + self.position[...])
        pooled = (tokens[:, 1] + tokens[:, 3]) / 2
        delta = self.readout(pooled)
        return bounded_acuity(delta, pre), maps

    def __call__(self, feat_h, feat_v, pre):
        return self.forward(feat_h, feat_v, pre)[0]

    def attention_maps(self, feat_h, feat_v, pre) -> jax.Array:
        """(5, 5) attention mass between CTT_TOKENS, averaged over blocks, heads and the batch."""
        _, maps = self.forward(feat_h, feat_v, pre)
        return jnp.mean(jnp.stack([w.mean(axis=(0, 1)) for w in maps]), axis=0)


class LateFusionHead(nnx.Module):
    """Late fusion: [proj_h(f_h), proj_v(f_v) (, enc(z))] -> MLP -> delta (reference `late_join_pva`)."""

    def __init__(self, feature_dim: int, *, dim: int = 128, use_pre: bool = True, dropout: float = 0.1, rngs):
        self.uses_pre = use_pre
        self.proj_h = Linear(feature_dim, dim, rngs=rngs)
        self.proj_v = Linear(feature_dim, dim, rngs=rngs)
        self.va = Linear(1, dim, rngs=rngs) if use_pre else None
        self.hidden = Linear((3 if use_pre else 2) * dim, dim, rngs=rngs)
        self.top = Linear(dim, 1, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, feat_h, feat_v, pre):
        _check_inputs(feat_h, feat_v, pre)
        parts = [jax.nn.relu(self.proj_h(feat_h)), jax.nn.relu(self.proj_v(feat_v))]
        if self.uses_pre:
            parts.append(jax.nn.relu(self.va(pre[:, None])))
        delta = self.top(self.dropout(jax.nn.relu(self.hidden(jnp.concatenate(parts, axis=-1)))))[:, 0]
        return bounded_acuity(delta, pre if self.uses_pre else None)


class SingleViewHead(nnx.Module):
    """One view's feature (+ the encoded pre-op VA) -> MLP -> delta (reference `single_view_h/v`)."""

    def __init__(
        self, feature_dim: int, *, view: Literal["h", "v"], dim: int = 128, use_pre: bool = True, dropout=0.1, rngs
    ):
        if view not in ("h", "v"):
            raise ValueError(f"view={view!r}: use 'h' (horizontal) or 'v' (vertical)")
        self.view, self.uses_pre = view, use_pre
        self.proj = Linear(feature_dim, dim, rngs=rngs)
        self.va = Linear(1, dim, rngs=rngs) if use_pre else None
        self.hidden = Linear((2 if use_pre else 1) * dim, dim, rngs=rngs)
        self.top = Linear(dim, 1, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, feat_h, feat_v, pre):
        _check_inputs(feat_h, feat_v, pre)
        parts = [jax.nn.relu(self.proj(feat_h if self.view == "h" else feat_v))]
        if self.uses_pre:
            parts.append(jax.nn.relu(self.va(pre[:, None])))
        delta = self.top(self.dropout(jax.nn.relu(self.hidden(jnp.concatenate(parts, axis=-1)))))[:, 0]
        return bounded_acuity(delta, pre if self.uses_pre else None)


def view_backbone(*, width: int = 32, depth: Literal[10, 18] = 10, rngs: nnx.Rngs) -> ResNet:
    """A per-view ResNet for one-channel B-scans: ResNet-10 (one block per stage) or ResNet-18,
    stage widths width x (1, 2, 4, 8) (64 is torchvision's; 32 halves it). Its 1-unit head is the
    single-view regressor used to pre-train it; `features` feeds the fusion heads."""
    if depth not in (10, 18):
        raise ValueError(f"backbone depth={depth}: use 10 or 18")
    sizes = (1, 1, 1, 1) if depth == 10 else (2, 2, 2, 2)
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ResNet(
        block="basic", stage_sizes=sizes, stage_widths=widths, stem="imagenet", num_classes=1, in_channels=1, rngs=rngs
    )


class TwoViewModel(nnx.Module):
    """Two per-view backbones (separate weights, as in the reference) feeding one fusion head.

    Images are (B, H, W) single-channel B-scans; the head sees `backbone.features` of each view.
    """

    def __init__(self, backbone_h: ResNet, backbone_v: ResNet, head: nnx.Module):
        self.backbone_h, self.backbone_v, self.head = backbone_h, backbone_v, head

    def features(self, image_h, image_v):
        if image_h.ndim != 3 or image_h.shape != image_v.shape:
            raise ValueError(f"scans must be (batch, height, width) of one shape, got {image_h.shape}, {image_v.shape}")
        return self.backbone_h.features(image_h[..., None]), self.backbone_v.features(image_v[..., None])

    def __call__(self, image_h, image_v, pre):
        feat_h, feat_v = self.features(image_h, image_v)
        return self.head(feat_h, feat_v, pre)
