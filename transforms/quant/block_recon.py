"""Block-reconstruction post-training quantization (BRECQ / QDrop) for frugal ResNets, with AQuant.

The model is not rewritten through interception (`transforms.quant.model_quant` does that for
rule-based PTQ/QAT); block reconstruction needs to own each block's weights, rounding variables and
activation quantizers, so this module takes a self-contained route:

1. :func:`fold_resnet` reads a :class:`models.resnet.ResNet` (BasicBlock or Bottleneck blocks) into
   a static :class:`NetworkSpec` plus float arrays, folding every BatchNorm into its convolution.
2. Fake quantizers sit on every convolution's weights (per output channel) and on every
   convolution's input: the block input (shared by the residual branch and the shortcut) and the
   activation between chained convolutions. The first layer (stem) and the last (classifier) use
   `first_last_bits` (8 by default, the usual BRECQ/QDrop convention) with round-to-nearest.
3. Each block is reconstructed in turn (:func:`reconstruct_block`): its output on the
   quantized-model input is fitted to the float block's output on the float input, with

   * AdaRound weights (rectified sigmoid ``h(V) = clip(sigmoid(V) * 1.2 - 0.1, 0, 1)``, the
     regularizer ``sum(1 - |2h - 1|**beta)`` weighted 0.01, beta annealed 20 -> 2 after a 20 %
     warm-up, hard rounding ``V >= 0`` at the end),
   * LSQ activation scales (Adam, cosine schedule), initialized by an MSE clip search,
   * QDrop: each element of every activation quantizer's output is its quantized value with
     probability ``1 - drop_prob`` and the float value otherwise (the float *model's* input for the
     block input quantizer),
   * and, for ``method="aquant"``, the learned rounding borders of :mod:`transforms.quant.aquant`.

   The loss is the squared error summed over channels and averaged over batch and pixels.
4. The result is a :class:`QuantizedResNet` (a pytree; call it on NHWC images).

``method="rtn"`` skips step 3: round-to-nearest everywhere with the same MSE-calibrated scales.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from transforms.quant.aquant import (
    GRANULARITIES,
    GridSpec,
    calibrate_activation,
    fake_quant_activation,
    grid_position,
    grid_spec,
    init_border_logits,
    _range_to_scale,
)
from transforms.quant.numerics import KINDS

METHODS = ("rtn", "qdrop", "aquant")
# AdaRound's rectified sigmoid stretch.
ZETA, GAMMA = 1.1, -0.1


@dataclasses.dataclass(frozen=True)
class ReconConfig:
    """Settings of one post-training quantization run (defaults follow QDrop's ImageNet recipe)."""

    weight_bits: int = 4
    act_bits: int = 4
    first_last_bits: int | None = 8  # None: stem and classifier use weight_bits / act_bits
    kind: str = "int"  # ANT kind of the low-bit grids
    method: str = "qdrop"
    border_granularity: str = "channel_level"  # AQuant only
    calibration_size: int = 1024
    iterations: int = 20000  # per block
    batch_size: int = 32
    drop_prob: float = 0.5
    round_weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    weight_lr: float = 1e-3
    scale_lr: float = 4e-5
    border_lr: float = 1e-2
    border_temperature: float = 0.1
    chunk: int = 50  # iterations per compiled scan (and per progress-bar update)
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("weight_bits", "act_bits") + (("first_last_bits",) if self.first_last_bits is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int between 2 and 8, got {value!r}")
            if not 2 <= value <= 8:
                raise ValueError(f"{name}={value} is outside the supported range 2..8 bits")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; choose one of {KINDS}")
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; choose one of {METHODS}")
        if self.border_granularity not in GRANULARITIES:
            raise ValueError(f"border_granularity={self.border_granularity!r}; choose one of {GRANULARITIES}")
        for name in ("calibration_size", "iterations", "batch_size", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f"drop_prob={self.drop_prob} must be in [0, 1)")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup={self.warmup} must be in [0, 1)")
        for name in ("weight_lr", "scale_lr", "border_lr", "border_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")


# --------------------------------------------------------------------------------------------
# The network as static structure + arrays


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    name: str
    strides: tuple[int, ...]
    padding: Any


@dataclasses.dataclass(frozen=True)
class ActSpec:
    """An activation quantizer: its grid and, for AQuant, its border granularity (None = nearest)."""

    name: str
    grid: GridSpec
    granularity: str | None = None


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """A residual block: convolutions chained with activations in between, plus a shortcut."""

    chain: tuple[ConvSpec, ...]
    shortcut: ConvSpec | None
    acts: tuple[ActSpec, ...] = ()

    def act(self, name: str) -> ActSpec:
        return next(a for a in self.acts if a.name == name)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    activation: Callable
    stem: ConvSpec
    maxpool: bool
    blocks: tuple[BlockSpec, ...]
    stem_act: ActSpec | None = None
    head_act: ActSpec | None = None


def _folded_conv(conv: nnx.Conv, norm) -> dict:
    if conv.feature_group_count != 1 or conv.kernel_dilation not in (1, (1, 1)):
        raise ValueError("block reconstruction supports plain convolutions (no groups, no dilation)")
    w = jnp.asarray(conv.kernel[...], jnp.float32)
    b = jnp.zeros(w.shape[-1], jnp.float32) if conv.bias is None else jnp.asarray(conv.bias[...], jnp.float32)
    if isinstance(norm, nnx.BatchNorm):
        gamma = norm.scale[...] if norm.scale is not None else 1.0
        beta = norm.bias[...] if norm.bias is not None else 0.0
        factor = gamma / jnp.sqrt(norm.var[...] + norm.epsilon)
        w, b = w * factor, (b - norm.mean[...]) * factor + beta
    elif type(norm).__name__ != "Identity":
        raise ValueError(f"norm {type(norm).__name__} cannot be folded into a convolution; block "
                         "reconstruction supports norm='batch' or norm='none'")
    return {"w": w, "b": b}


def _conv_spec(name: str, conv: nnx.Conv) -> ConvSpec:
    strides = conv.strides if isinstance(conv.strides, tuple) else (conv.strides,) * 2
    return ConvSpec(name, tuple(int(s) for s in strides), conv.padding)


def fold_resnet(model: nnx.Module) -> tuple[NetworkSpec, dict]:
    """A frugal ResNet as ``(spec, float params)`` with BatchNorm folded into the convolutions."""
    if not all(hasattr(model, a) for a in ("stem_conv", "stem_norm", "blocks", "head", "activation")):
        layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, (nnx.Conv, nnx.Linear, nnx.Einsum))]
        if not layers:
            raise ValueError(f"model {type(model).__name__} has no quantizable layer (nnx.Conv or nnx.Linear)")
        raise ValueError(f"block reconstruction supports frugal ResNets (models.resnet); "
                         f"{type(model).__name__} is not one")
    params = {"stem": _folded_conv(model.stem_conv, model.stem_norm), "blocks": [],
              "head": {"w": jnp.asarray(model.head.kernel[...], jnp.float32),
                       "b": (jnp.zeros(model.head.out_features, jnp.float32) if model.head.bias is None
                             else jnp.asarray(model.head.bias[...], jnp.float32))}}
    blocks = []
    for block in model.blocks:
        chain, weights, i = [], {}, 1
        while hasattr(block, f"conv{i}"):
            name = f"conv{i}"
            chain.append(_conv_spec(name, getattr(block, name)))
            weights[name] = _folded_conv(getattr(block, name), getattr(block, f"norm{i}"))
            i += 1
        if not chain:
            raise ValueError(f"block {type(block).__name__} has no conv1; not a ResNet block")
        shortcut = None
        if getattr(block, "shortcut_conv", None) is not None:
            shortcut = _conv_spec("shortcut", block.shortcut_conv)
            weights["shortcut"] = _folded_conv(block.shortcut_conv, block.shortcut_norm)
        blocks.append(BlockSpec(tuple(chain), shortcut))
        params["blocks"].append(weights)
    spec = NetworkSpec(model.activation, _conv_spec("stem", model.stem_conv),
                       getattr(model, "stem_kind", "cifar") == "imagenet", tuple(blocks))
    return spec, params


def _conv(x, p, spec: ConvSpec):
    y = jax.lax.conv_general_dilated(x, p["w"], spec.strides, spec.padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def block_forward(spec: BlockSpec, weights: dict, x, quant: Callable, activation: Callable):
    """One residual block; ``quant(name, value)`` is applied at the block input ("in") and
    between chained convolutions ("mid0", "mid1", ...)."""
    xin = quant("in", x)
    y = xin
    for i, conv in enumerate(spec.chain):
        y = _conv(y, weights[conv.name], conv)
        if i < len(spec.chain) - 1:
            y = quant(f"mid{i}", activation(y))
    shortcut = xin if spec.shortcut is None else _conv(xin, weights["shortcut"], spec.shortcut)
    return activation(y + shortcut)


def _no_quant(name, v):
    return v


def _act_quantizer(act_spec: ActSpec, params: dict, temperature: float = 0.1):
    return lambda v: fake_quant_activation(jnp.asarray(v), jnp.maximum(params["scale"], 1e-8), params["offset"],
                                           act_spec.grid, params.get("border"), temperature=temperature)


def network_forward(spec: NetworkSpec, weights: dict, acts: dict | None, x):
    """The whole ResNet; ``acts=None`` runs it in float."""
    quantize = acts is not None
    if quantize:
        x = _act_quantizer(spec.stem_act, acts["stem"])(x)
    x = spec.activation(_conv(x, weights["stem"], spec.stem))
    if spec.maxpool:
        x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
    for i, block in enumerate(spec.blocks):
        quant = _no_quant
        if quantize:
            quant = lambda name, v, b=block, a=acts["blocks"][i]: _act_quantizer(b.act(name), a[name])(v)
        x = block_forward(block, weights["blocks"][i], x, quant, spec.activation)
    features = jnp.mean(x, axis=(1, 2))
    if quantize:
        features = _act_quantizer(spec.head_act, acts["head"])(features)
    return features @ weights["head"]["w"] + weights["head"]["b"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedResNet:
    """A fake-quantized ResNet: hard-rounded (dequantized) weights and activation quantizers.

    ``acts[...]["border"]`` holds AQuant's border logits where they were learned.
    """

    weights: dict
    acts: dict | None
    spec: NetworkSpec = dataclasses.field(metadata=dict(static=True))

    def __call__(self, images):
        return _jitted_forward(self, jnp.asarray(images, jnp.float32))


@jax.jit
def _jitted_forward(net: QuantizedResNet, images):
    return network_forward(net.spec, net.weights, net.acts, images)


def float_network(model: nnx.Module) -> QuantizedResNet:
    """The folded float model in the same functional form (the reference the quantized ones chase)."""
    spec, params = fold_resnet(model)
    return QuantizedResNet(params, None, spec)


# --------------------------------------------------------------------------------------------
# AdaRound weights


def init_weight_rounding(w: jax.Array, grid: GridSpec, *, num_ratios: int = 40, min_ratio: float = 0.3) -> dict:
    """Per-output-channel (last axis) scale and offset by an MSE clip search, and AdaRound's state.

    Returns ``lo``/``hi`` (the grid levels around every weight, in grid units; equal where the
    weight is clipped), ``scale``/``offset`` per channel, and ``v`` with ``h(v)`` equal to the
    weight's fraction within its gap, so the soft weight starts at the float weight and the hard
    rounding ``v >= 0`` starts at round-to-nearest.
    """
    return _init_weight_rounding(jnp.asarray(w, jnp.float32), grid, num_ratios, float(min_ratio))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_weight_rounding(w, grid: GridSpec, num_ratios: int, min_ratio: float) -> dict:
    axes = tuple(range(w.ndim - 1))
    low, high = jnp.min(w, axis=axes), jnp.max(w, axis=axes)

    def error(ratio):
        scale, offset = _range_to_scale(low * ratio, high * ratio, grid)
        return jnp.mean((fake_quant_activation(w, scale, offset, grid) - w) ** 2, axis=axes)

    ratios = jnp.linspace(min_ratio, 1.0, num_ratios)
    best = ratios[jnp.argmin(jax.lax.map(error, ratios), axis=0)]  # one ratio per channel
    best_scale, best_offset = _range_to_scale(low * best, high * best, grid)
    u = w / best_scale + best_offset
    _, lo, hi, frac = grid_position(u, grid)
    below, above = u <= grid.values[0], u >= grid.values[-1]
    lo = jnp.where(below, grid.values[0], jnp.where(above, grid.values[-1], lo))
    hi = jnp.where(below, grid.values[0], jnp.where(above, grid.values[-1], hi))
    rest = jnp.clip(frac, 0.0, 1.0)
    v = -jnp.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    return {"lo": lo, "hi": hi, "scale": best_scale, "offset": best_offset, "v": v}


def rectified_sigmoid(v: jax.Array) -> jax.Array:
    return jnp.clip(jax.nn.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _rounded_weight(state: dict, h: jax.Array) -> jax.Array:
    return (state["lo"] + (state["hi"] - state["lo"]) * h - state["offset"]) * state["scale"]


def nearest_weight(w: jax.Array, state: dict, grid: GridSpec) -> jax.Array:
    """Round-to-nearest with the calibrated per-channel scale (the RTN baseline's weights)."""
    return fake_quant_activation(w, state["scale"], state["offset"], grid)


# --------------------------------------------------------------------------------------------
# Reconstruction of one block


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """The hashable part of ReconConfig that the compiled training chunk depends on."""

    iterations: int
    drop_prob: float
    round_weight: float
    beta_start: float
    beta_end: float
    warmup: float
    weight_lr: float
    scale_lr: float
    border_lr: float
    temperature: float


def _optimizer(s: _Schedule) -> optax.GradientTransformation:
    transforms = {
        "v": optax.adam(s.weight_lr),
        "scale": optax.adam(optax.cosine_decay_schedule(s.scale_lr, s.iterations)),
        "border": optax.adam(optax.cosine_decay_schedule(s.border_lr, s.iterations)),
    }
    return optax.multi_transform(transforms, lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()})


def _block_loss(trainable, fixed, xq, xfp, target, key, beta, regularize, spec: BlockSpec, activation, s: _Schedule):
    hs = {name: rectified_sigmoid(v) for name, v in trainable["v"].items()}
    weights = {name: {"w": _rounded_weight(fixed["w"][name], hs[name]), "b": fixed["b"][name]} for name in hs}
    keys = dict(zip([a.name for a in spec.acts], jax.random.split(key, len(spec.acts))))

    def quant(name, v):
        q = fake_quant_activation(v, jnp.maximum(trainable["scale"][name], 1e-8), fixed["offset"][name],
                                  spec.act(name).grid, trainable["border"].get(name), temperature=s.temperature)
        if s.drop_prob == 0.0:
            return q
        # QDrop: keep the quantized value with probability 1 - p, else the float one (for the block
        # input, the float model's input).
        keep = jax.random.bernoulli(keys[name], 1.0 - s.drop_prob, v.shape)
        return jnp.where(keep, q, xfp if name == "in" else v)

    pred = block_forward(spec, weights, xq, quant, activation)
    recon = jnp.mean(jnp.sum((pred - target) ** 2, axis=-1))
    rounding = sum(jnp.sum(1.0 - jnp.abs(2.0 * h - 1.0) ** beta) for h in hs.values())
    return recon + s.round_weight * regularize * rounding, (recon, rounding)


@functools.partial(jax.jit, static_argnames=("spec", "activation", "schedule"))
def _train_chunk(trainable, opt_state, fixed, xq_all, xfp_all, target_all, batch_index, steps, key, *,
                 spec, activation, schedule: _Schedule):
    tx = _optimizer(schedule)
    total = schedule.iterations
    warm = schedule.warmup * total

    def body(carry, inputs):
        trainable, opt_state = carry
        idx, t = inputs
        rel = (t - warm) / max(total - warm, 1.0)
        beta = schedule.beta_end + (schedule.beta_start - schedule.beta_end) * jnp.maximum(0.0, 1.0 - rel)
        regularize = (t >= warm).astype(jnp.float32)
        (_, (recon, rounding)), grads = jax.value_and_grad(_block_loss, has_aux=True)(
            trainable, fixed, xq_all[idx], xfp_all[idx], target_all[idx], jax.random.fold_in(key, t),
            beta, regularize, spec, activation, schedule)
        updates, new_opt = tx.update(grads, opt_state, trainable)
        new_trainable = optax.apply_updates(trainable, updates)
        # Steps past the last iteration (padding of the final chunk) change nothing.
        valid = t < total
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(valid, a, b), new, old)
        return (keep(new_trainable, trainable), keep(new_opt, opt_state)), (recon, rounding)

    (trainable, opt_state), (recon, rounding) = jax.lax.scan(body, (trainable, opt_state), (batch_index, steps))
    return trainable, opt_state, recon, rounding


@functools.partial(jax.jit, static_argnames=("spec", "activation"))
def _quantized_block(weights, acts, x, *, spec: BlockSpec, activation):
    quant = lambda name, v: _act_quantizer(spec.act(name), acts[name])(v)
    return block_forward(spec, weights, x, quant, activation)


@functools.partial(jax.jit, static_argnames=("spec", "activation"))
def _float_block(weights, x, *, spec: BlockSpec, activation):
    return block_forward(spec, weights, x, _no_quant, activation)


def _batched(fn, x, batch: int = 256):
    return jnp.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def _recon_error(pred, target) -> float:
    return float(jnp.mean(jnp.sum((pred - target) ** 2, axis=-1)))


def _low_grid(config: ReconConfig, bits: int, samples=None) -> GridSpec:
    signed = True if samples is None else bool(jnp.min(samples) < 0)
    return grid_spec(config.kind, bits, signed=signed)


def reconstruct_block(spec: BlockSpec, weights: dict, xq, xfp, activation: Callable, config: ReconConfig,
                      *, block_index: int = 0, label: str = "") -> tuple[BlockSpec, dict, dict, dict]:
    """Quantizes one block. `weights` are its float (folded) convolutions, `xq`/`xfp` its inputs in
    the quantized and in the float model over the calibration set.

    Returns ``(spec with activation quantizers, hard-rounded weights, activation quantizer
    params, log)``; the log has the block's reconstruction error with round-to-nearest
    (``loss_rtn``) and after reconstruction (``loss_final``), and the training loss history.
    """
    t0 = time.perf_counter()
    target = _batched(lambda x: _float_block(weights, x, spec=spec, activation=activation), xfp)
    wstate = {name: init_weight_rounding(p["w"], _low_grid(config, config.weight_bits)) for name, p in weights.items()}
    wgrid = _low_grid(config, config.weight_bits)
    rtn_weights = {name: {"w": nearest_weight(weights[name]["w"], wstate[name], wgrid), "b": weights[name]["b"]}
                   for name in weights}

    # Activation quantizers, calibrated in call order on the quantized path (RTN weights).
    acts, act_specs = {}, []
    aquant = config.method == "aquant"

    def calibrate(name, v):
        grid = _low_grid(config, config.act_bits, v)
        scale, offset = calibrate_activation(v, grid)
        acts[name] = {"scale": scale, "offset": offset}
        if aquant:
            acts[name]["border"] = init_border_logits(config.border_granularity, v.shape[-1], grid.num_gaps)
        act_specs.append(ActSpec(name, grid, config.border_granularity if aquant else None))
        return fake_quant_activation(v, scale, offset, grid)

    block_forward(spec, rtn_weights, xq[:256], calibrate, activation)
    spec = dataclasses.replace(spec, acts=tuple(act_specs))
    n_eval = min(len(xq), 256)
    loss_rtn = _recon_error(_quantized_block(rtn_weights, acts, xq[:n_eval], spec=spec, activation=activation),
                            target[:n_eval])
    log = {"block": block_index, "loss_rtn": loss_rtn, "loss_final": loss_rtn, "history": [], "seconds": 0.0}
    if config.method == "rtn":
        log["seconds"] = time.perf_counter() - t0
        return spec, rtn_weights, acts, log

    schedule = _Schedule(config.iterations, config.drop_prob, config.round_weight, config.beta_start,
                         config.beta_end, config.warmup, config.weight_lr, config.scale_lr, config.border_lr,
                         config.border_temperature)
    trainable = {"v": {n: s["v"] for n, s in wstate.items()},
                 "scale": {n: a["scale"] for n, a in acts.items()},
                 "border": {n: a["border"] for n, a in acts.items() if "border" in a}}
    fixed = {"w": {n: {k: s[k] for k in ("lo", "hi", "scale", "offset")} for n, s in wstate.items()},
             "b": {n: p["b"] for n, p in weights.items()},
             "offset": {n: a["offset"] for n, a in acts.items()}}
    opt_state = _optimizer(schedule).init(trainable)
    rng = np.random.default_rng([config.seed, block_index])
    chunk = min(config.chunk, config.iterations)
    chunks = -(-config.iterations // chunk)
    batch_index = rng.integers(0, len(xq), size=(chunks * chunk, config.batch_size))
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), block_index)
    from tqdm.auto import tqdm

    with tqdm(total=config.iterations, desc=label or f"block {block_index}", disable=not config.progress,
              leave=False) as bar:
        for c in range(chunks):
            steps = np.arange(c * chunk, (c + 1) * chunk)
            trainable, opt_state, recon, rounding = _train_chunk(
                trainable, opt_state, fixed, xq, xfp, target, jnp.asarray(batch_index[steps]),
                jnp.asarray(steps, jnp.float32), key, spec=spec, activation=activation, schedule=schedule)
            n_valid = min(chunk, config.iterations - c * chunk)
            mean_recon = float(jnp.mean(recon[:n_valid]))
            log["history"].append({"iteration": int(steps[n_valid - 1]) + 1, "recon_loss": mean_recon,
                                   "rounding_loss": float(jnp.mean(rounding[:n_valid]))})
            bar.update(n_valid)
            bar.set_postfix(recon=f"{mean_recon:.4g}")

    hard_weights = {n: {"w": _rounded_weight(fixed["w"][n], (trainable["v"][n] >= 0).astype(jnp.float32)),
                        "b": fixed["b"][n]} for n in weights}
    final_acts = {n: {"scale": jnp.maximum(trainable["scale"][n], 1e-8), "offset": a["offset"],
                      **({"border": trainable["border"][n]} if n in trainable["border"] else {})}
                  for n, a in acts.items()}
    log["loss_final"] = _recon_error(
        _quantized_block(hard_weights, final_acts, xq[:n_eval], spec=spec, activation=activation), target[:n_eval])
    log["seconds"] = time.perf_counter() - t0
    return spec, hard_weights, final_acts, log


# --------------------------------------------------------------------------------------------
# The whole network


def _first_last_grid(config: ReconConfig, bits: int, samples=None) -> GridSpec:
    # The 8-bit first and last layers stay on the int grid whatever the low-bit kind is.
    kind = "int" if config.first_last_bits is not None else config.kind
    signed = True if samples is None else bool(jnp.min(samples) < 0)
    return grid_spec(kind, bits, signed=signed)


def _round_layer(p: dict, grid: GridSpec) -> dict:
    state = init_weight_rounding(p["w"], grid)
    return {"w": nearest_weight(p["w"], state, grid), "b": p["b"]}


def quantize_resnet(model: nnx.Module, calibration_images, config: ReconConfig | None = None
                    ) -> tuple[QuantizedResNet, dict]:
    """Post-training quantization of a frugal ResNet by `config.method` ("rtn", "qdrop", "aquant").

    `calibration_images` (NHWC) supply the first ``config.calibration_size`` images. The input
    model is not modified. Returns the quantized network and a log (per-block reconstruction
    errors and loss histories).
    """
    config = config or ReconConfig()
    spec, params = fold_resnet(model)
    images = np.asarray(calibration_images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"calibration_images must be NHWC images of rank 4, got shape {images.shape}")
    n = min(config.calibration_size, len(images))
    if n < config.batch_size:
        raise ValueError(f"the calibration set has {n} images (calibration_size={config.calibration_size}, "
                         f"{len(images)} given), fewer than one batch of batch_size={config.batch_size}")
    images = jnp.asarray(images[:n])
    t0 = time.perf_counter()
    edge_w = config.first_last_bits or config.weight_bits
    edge_a = config.first_last_bits or config.act_bits

    stem_grid = _first_last_grid(config, edge_a, images)
    scale, offset = calibrate_activation(images, stem_grid)
    acts = {"stem": {"scale": scale, "offset": offset}, "blocks": []}
    weights = {"stem": _round_layer(params["stem"], _first_last_grid(config, edge_w)), "blocks": []}
    spec = dataclasses.replace(spec, stem_act=ActSpec("stem", stem_grid))

    def run_stem(x, w, quant):
        x = spec.activation(_conv(quant(x), w, spec.stem))
        if spec.maxpool:
            x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        return x

    stem_quant = _act_quantizer(spec.stem_act, acts["stem"])
    xq = _batched(jax.jit(lambda x: run_stem(x, weights["stem"], stem_quant)), images)
    xfp = _batched(jax.jit(lambda x: run_stem(x, params["stem"], lambda v: v)), images)

    block_specs, logs = [], []
    for i, block in enumerate(spec.blocks):
        label = f"{config.method} W{config.weight_bits}A{config.act_bits} block {i + 1}/{len(spec.blocks)}"
        bspec, bweights, bacts, log = reconstruct_block(block, params["blocks"][i], xq, xfp, spec.activation,
                                                        config, block_index=i, label=label)
        block_specs.append(bspec)
        weights["blocks"].append(bweights)
        acts["blocks"].append(bacts)
        logs.append(log)
        xq = _batched(lambda x: _quantized_block(bweights, bacts, x, spec=bspec, activation=spec.activation), xq)
        xfp = _batched(lambda x: _float_block(params["blocks"][i], x, spec=block, activation=spec.activation), xfp)

    features = jnp.mean(xq, axis=(1, 2))
    head_grid = _first_last_grid(config, edge_a, features)
    scale, offset = calibrate_activation(features, head_grid)
    acts["head"] = {"scale": scale, "offset": offset}
    weights["head"] = _round_layer(params["head"], _first_last_grid(config, edge_w))
    spec = dataclasses.replace(spec, blocks=tuple(block_specs), head_act=ActSpec("head", head_grid))
    report = {"method": config.method, "weight_bits": config.weight_bits, "act_bits": config.act_bits,
              "first_last_bits": config.first_last_bits, "calibration_size": int(n),
              "iterations": config.iterations if config.method != "rtn" else 0,
              "seconds": time.perf_counter() - t0, "blocks": logs}
    return QuantizedResNet(weights, acts, spec), report
