"""Block-reconstruction post-training quantization (BRECQ / QDrop) for frugal ResNets, with AQuant.

1. :func:`frugal.transforms.quant.folded_resnet.fold_resnet` turns the model into a static spec plus float
   arrays with BatchNorm folded into the convolutions.
2. Fake quantizers sit on every convolution's weights (per output channel) and on every
   convolution's input: the block input (shared by the residual branch and the shortcut) and the
   activation between chained convolutions. The first layer (stem) and the last (classifier) use
   `first_last_bits` (8 by default, the usual BRECQ/QDrop convention) with round-to-nearest.
3. Each block is reconstructed in turn (:func:`reconstruct_block`): its output on the
   quantized-model input is fitted to the float block's output on the float input, with

   * AdaRound weights (:mod:`frugal.transforms.quant.adaround`; regularizer weight 0.01, beta annealed
     20 -> 2 after a 20 % warm-up, hard rounding ``v >= 0`` at the end),
   * LSQ activation scales (Adam, cosine schedule), initialized by an MSE clip search,
   * QDrop: each element of every activation quantizer's output is its quantized value with
     probability ``1 - drop_prob`` and the float value otherwise (the float *model's* input for the
     block input quantizer),
   * and, for ``method="aquant"``, the learned rounding borders of :mod:`frugal.transforms.quant.aquant`.

   The loss is the squared error summed over channels and averaged over batch and pixels. Every
   block starts at round-to-nearest (AdaRound at the nearest level, borders at 0.5); with
   ``fallback_to_nearest`` a block whose reconstructed error over the calibration set is not below
   its round-to-nearest error keeps the round-to-nearest quantization instead (the log says so).
4. The result is a :class:`QuantizedResNet` (a pytree; call it on NHWC images).

``method="rtn"`` skips step 3: round-to-nearest everywhere with the same MSE-calibrated scales.
The QDrop-style baseline and AQuant share every setting except the learned border, and by default
one compiled training step: QDrop-style runs AQuant's with the borders frozen at 0.5
(``ReconConfig.shared_program``). With a ``block_cache`` (:mod:`frugal.transforms.quant.recon_cache`)
every reconstructed block is kept and restored, so a killed run resumes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.transforms import prng
from frugal.transforms.quant.adaround import (
    hard_weight,
    init_weight_rounding,
    nearest_weight,
    rectified_sigmoid,
    rounded_weight,
    rounding_regularizer,
    undecided_fraction,
)
from frugal.transforms.quant.aquant import (
    GridSpec,
    border_from_logits,
    calibrate_activation,
    fake_quant_activation,
    grid_spec,
    init_border_logits,
)
from frugal.transforms.quant.folded_resnet import (
    ActSpec,
    BlockSpec,
    QuantizedResNet,
    activation_quantizer,
    apply_conv,
    block_forward,
    float_network,
    fold_resnet,
    no_quant,
)
from frugal.transforms.quant.recon_config import METHODS, ReconConfig

# Names other modules and tests import from here (they lived in this module before the split).
__all__ = [
    "METHODS",
    "QuantizedResNet",
    "ReconConfig",
    "float_network",
    "fold_resnet",
    "init_weight_rounding",
    "nearest_weight",
    "quantize_resnet",
    "reconstruct_block",
    "rectified_sigmoid",
]

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

    @classmethod
    def of(cls, config: ReconConfig) -> _Schedule:
        return cls(
            config.iterations,
            config.drop_prob,
            config.round_weight,
            config.beta_start,
            config.beta_end,
            config.warmup,
            config.weight_lr,
            config.scale_lr,
            config.border_lr,
            config.border_temperature,
        )


def _optimizer(s: _Schedule) -> optax.GradientTransformation:
    transforms = {
        "v": optax.adam(s.weight_lr),
        "scale": optax.adam(optax.cosine_decay_schedule(s.scale_lr, s.iterations)),
        "border": optax.adam(optax.cosine_decay_schedule(s.border_lr, s.iterations)),
    }
    return optax.multi_transform(
        transforms, lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()}
    )


def _block_loss(trainable, fixed, xq, xfp, target, key, beta, regularize, spec: BlockSpec, activation, s: _Schedule):
    hs = {name: rectified_sigmoid(v) for name, v in trainable["v"].items()}
    weights = {name: {"w": rounded_weight(fixed["w"][name], hs[name]), "b": fixed["b"][name]} for name in hs}
    keys = dict(zip([a.name for a in spec.acts], jax.random.split(key, len(spec.acts))))

    def quant(name, v):
        q = fake_quant_activation(
            v,
            jnp.maximum(trainable["scale"][name], 1e-8),
            fixed["offset"][name],
            spec.act(name).grid,
            trainable["border"].get(name),
            temperature=s.temperature,
        )
        if s.drop_prob == 0.0:
            return q
        # QDrop: keep the quantized value with probability 1 - p, else the float one (for the block
        # input, the float model's input).
        keep = prng.bernoulli(keys[name], 1.0 - s.drop_prob, v.shape)
        return jnp.where(keep, q, xfp if name == "in" else v)

    pred = block_forward(spec, weights, xq, quant, activation)
    recon = jnp.mean(jnp.sum((pred - target) ** 2, axis=-1))
    rounding = sum(rounding_regularizer(h, beta) for h in hs.values())
    return recon + s.round_weight * regularize * rounding, (recon, rounding)


# How many times the training step was traced (one trace = one compiled program), by the Python
# side effect in its body; `compiled_programs()` reads it.
_TRACES = collections.Counter()


def compiled_programs() -> int:
    """How many reconstruction training programs this process has traced and compiled so far.

    Blocks of one shape (same convolutions and activation grids), every seed and both learned
    methods (QDrop-style runs AQuant's program with its borders frozen at 0.5) share one program,
    so this grows with the distinct block shapes x settings x border granularities, not with runs.
    """
    return _TRACES["train_step"]


# One optimization step is its own compiled program, driven from Python. Not a lax.scan over steps:
# XLA:CPU runs this step inside a while loop about 10x slower than as a program of its own (measured
# on a ResNet-8 block at batch 32 with JAX 0.10.2: 0.46 s vs 0.046 s per step, for a scan of length
# 1 as well as 50), and the per-step dispatch costs well under a millisecond.
@functools.partial(jax.jit, static_argnames=("spec", "activation", "schedule"))
def _train_step(
    trainable,
    opt_state,
    fixed,
    xq_all,
    xfp_all,
    target_all,
    idx,
    t,
    key,
    learn_border,
    *,
    spec,
    activation,
    schedule: _Schedule,
):
    _TRACES["train_step"] += 1
    tx = _optimizer(schedule)
    total = schedule.iterations
    warm = schedule.warmup * total
    rel = (t - warm) / max(total - warm, 1.0)
    beta = schedule.beta_end + (schedule.beta_start - schedule.beta_end) * jnp.maximum(0.0, 1.0 - rel)
    regularize = (t >= warm).astype(jnp.float32)
    (_, (recon, rounding)), grads = jax.value_and_grad(_block_loss, has_aux=True)(
        trainable,
        fixed,
        xq_all[idx],
        xfp_all[idx],
        target_all[idx],
        jax.random.fold_in(key, t),
        beta,
        regularize,
        spec,
        activation,
        schedule,
    )
    updates, new_opt = tx.update(grads, opt_state, trainable)
    # QDrop-style runs this same program with learn_border = 0: the borders stay at exactly 0.5, which
    # is round-to-nearest, and they hand no gradient to anything else (see aquant.fake_quant_activation).
    updates = {**updates, "border": jax.tree.map(lambda u: u * learn_border, updates["border"])}
    return optax.apply_updates(trainable, updates), new_opt, recon, rounding


@functools.partial(jax.jit, static_argnames=("spec", "activation"))
def _quantized_block(weights, acts, x, *, spec: BlockSpec, activation):
    quant = lambda name, v: activation_quantizer(spec.act(name), acts[name])(v)
    return block_forward(spec, weights, x, quant, activation)


@functools.partial(jax.jit, static_argnames=("spec", "activation"))
def _float_block(weights, x, *, spec: BlockSpec, activation):
    return block_forward(spec, weights, x, no_quant, activation)


def _batched(fn, x, batch: int = 256):
    return jnp.concatenate([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def _recon_error(block_fn, xq, target) -> float:
    """The reconstruction loss (no dropping) over every calibration image."""
    return float(jnp.mean(jnp.sum((_batched(block_fn, xq) - target) ** 2, axis=-1)))


def _signed(samples) -> bool:
    """Whether a grid must hold negative values: true without samples, else whether any is negative
    (checked on the host, so no program is compiled per activation shape)."""
    return True if samples is None else bool((np.asarray(samples) < 0).any())


def _low_grid(config: ReconConfig, bits: int, samples=None) -> GridSpec:
    signed = _signed(samples)
    return grid_spec(config.kind, bits, signed=signed)


def _calibrate_block(spec: BlockSpec, weights: dict, xq, activation: Callable, config: ReconConfig):
    """Round-to-nearest weights and MSE-calibrated activation quantizers (borders at 0.5 for AQuant),
    calibrated in call order on the quantized path. Returns (spec with quantizers, weight
    rounding state, RTN weights, activation params)."""
    wgrid = _low_grid(config, config.weight_bits)
    wstate = {name: init_weight_rounding(p["w"], wgrid) for name, p in weights.items()}
    rtn_weights = {
        name: {"w": nearest_weight(weights[name]["w"], wstate[name], wgrid), "b": weights[name]["b"]}
        for name in weights
    }
    acts, act_specs = {}, []
    # QDrop-style shares AQuant's program (borders frozen at 0.5) unless config.shared_program is off.
    aquant = config.method == "aquant" or (config.method == "qdrop" and config.shared_program)

    def calibrate(name, v):
        grid = _low_grid(config, config.act_bits, v)
        scale, offset = calibrate_activation(v, grid)
        acts[name] = {"scale": scale, "offset": offset}
        if aquant:
            acts[name]["border"] = init_border_logits(config.border_granularity, v.shape[-1], grid.num_gaps)
        act_specs.append(ActSpec(name, grid, config.border_granularity if aquant else None))
        return fake_quant_activation(v, scale, offset, grid)

    block_forward(spec, rtn_weights, xq[:256], calibrate, activation)
    return dataclasses.replace(spec, acts=tuple(act_specs)), wstate, rtn_weights, acts


def reconstruct_block(
    spec: BlockSpec,
    weights: dict,
    xq,
    xfp,
    activation: Callable,
    config: ReconConfig,
    *,
    block_index: int = 0,
    label: str = "",
    cache: BlockCache | None = None,
    cache_key: str | None = None,
) -> tuple[BlockSpec, dict, dict, dict]:
    """Quantizes one block. `weights` are its float (folded) convolutions, `xq`/`xfp` its inputs in
    the quantized and in the float model over the calibration set.

    Returns ``(spec with activation quantizers, hard-rounded weights, activation quantizer
    params, log)``. The log has the block's error over the calibration set with round-to-nearest
    (``loss_rtn``), after reconstruction (``loss_reconstructed``) and of what is returned
    (``loss_final``), whether the reconstruction was kept (``kept``), the share of AdaRound
    variables still undecided at the end (and after every logged chunk in ``history``), the mean
    border shift ``|b - 0.5|`` and the training loss history.

    With a `cache` (any object with ``get(key)`` -> ``(arrays, log)`` or None and
    ``put(key, arrays, log)``, e.g. :class:`frugal.transforms.quant.recon_cache.ReconCache`) and a
    `cache_key` naming everything the result depends on, a block found there is restored instead of
    reconstructed, and a reconstructed one is stored: a killed run resumes at its last finished block.
    """
    t0 = time.perf_counter()
    target = _batched(lambda x: _float_block(weights, x, spec=spec, activation=activation), xfp)
    spec, wstate, rtn_weights, acts = _calibrate_block(spec, weights, xq, activation, config)
    # QDrop-style trains with AQuant's program (borders frozen at 0.5) and returns without borders.
    frozen_borders = config.method == "qdrop" and config.shared_program
    out_spec = _without_borders(spec) if frozen_borders else spec
    if frozen_borders:
        acts_out = {n: {k: v for k, v in a.items() if k != "border"} for n, a in acts.items()}
    else:
        acts_out = acts
    if cache is not None and cache_key is not None and config.method != "rtn":
        found = cache.get(cache_key)
        if found is not None:
            arrays, log = found
            restored_weights, restored_acts = _restore((rtn_weights, acts_out), arrays)
            return out_spec, restored_weights, restored_acts, {**log, "from_cache": True}
    block_error = lambda w, a: _recon_error(
        lambda x: _quantized_block(w, a, x, spec=spec, activation=activation), xq, target
    )
    loss_rtn = block_error(rtn_weights, acts)
    log = {
        "block": block_index,
        "loss_rtn": loss_rtn,
        "loss_reconstructed": loss_rtn,
        "loss_final": loss_rtn,
        "kept": False,
        "history": [],
        "seconds": 0.0,
    }
    if config.method == "rtn":
        log["seconds"] = time.perf_counter() - t0
        return spec, rtn_weights, acts, log

    schedule = _Schedule.of(config)
    trainable = {
        "v": {n: s["v"] for n, s in wstate.items()},
        "scale": {n: a["scale"] for n, a in acts.items()},
        "border": {n: a["border"] for n, a in acts.items() if "border" in a},
    }
    fixed = {
        "w": {n: {k: s[k] for k in ("lo", "hi", "scale", "offset")} for n, s in wstate.items()},
        "b": {n: p["b"] for n, p in weights.items()},
        "offset": {n: a["offset"] for n, a in acts.items()},
    }
    opt_state = _optimizer(schedule).init(trainable)
    # Activations computed with a mesh-placed model carry its layout, and so do the step's outputs; the
    # first step's own inputs must carry it too, or the second step compiles the program a second time.
    meshes = [a.sharding.mesh for a in (xq, xfp, target) if isinstance(a.sharding, jax.sharding.NamedSharding)]
    if meshes:
        replicated = jax.sharding.NamedSharding(meshes[0], jax.sharding.PartitionSpec())
        trainable, opt_state, fixed = jax.device_put((trainable, opt_state, fixed), replicated)
    rng = np.random.default_rng([config.seed, block_index])
    chunk = min(config.chunk, config.iterations)
    chunks = -(-config.iterations // chunk)
    batch_index = rng.integers(0, len(xq), size=(chunks * chunk, config.batch_size))
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), block_index)
    learn_border = jnp.float32(0.0 if frozen_borders else 1.0)
    from tqdm.auto import tqdm

    with tqdm(
        total=config.iterations, desc=label or f"block {block_index}", disable=not config.progress, leave=False
    ) as bar:
        for c in range(chunks):
            steps = np.arange(c * chunk, min((c + 1) * chunk, config.iterations))
            recon, rounding = [], []
            for t in steps:
                trainable, opt_state, r, g = _train_step(
                    trainable,
                    opt_state,
                    fixed,
                    xq,
                    xfp,
                    target,
                    jnp.asarray(batch_index[t]),
                    jnp.float32(t),
                    key,
                    learn_border,
                    spec=spec,
                    activation=activation,
                    schedule=schedule,
                )
                recon.append(r)
                rounding.append(g)
            recon, rounding = jnp.stack(recon), jnp.stack(rounding)
            n_valid = min(chunk, config.iterations - c * chunk)
            mean_recon = float(jnp.mean(recon[:n_valid]))
            log["history"].append(
                {
                    "iteration": int(steps[n_valid - 1]) + 1,
                    "recon_loss": mean_recon,
                    "rounding_loss": float(jnp.mean(rounding[:n_valid])),
                    "undecided_weights": undecided_fraction(
                        jnp.concatenate([v.ravel() for v in trainable["v"].values()])
                    ),
                }
            )
            bar.update(n_valid)
            bar.set_postfix(recon=f"{mean_recon:.4g}")

    hard_weights = {n: {"w": hard_weight(fixed["w"][n], trainable["v"][n]), "b": fixed["b"][n]} for n in weights}
    final_acts = {
        n: {
            "scale": jnp.maximum(trainable["scale"][n], 1e-8),
            "offset": a["offset"],
            **({"border": trainable["border"][n]} if n in trainable["border"] and not frozen_borders else {}),
        }
        for n, a in acts.items()
    }
    log["loss_reconstructed"] = _recon_error(
        lambda x: _quantized_block(hard_weights, final_acts, x, spec=out_spec, activation=activation), xq, target
    )
    all_v = jnp.concatenate([v.ravel() for v in trainable["v"].values()])
    log["undecided_weights"] = undecided_fraction(all_v)
    if trainable["border"] and not frozen_borders:
        borders = jnp.concatenate([border_from_logits(b).ravel() for b in trainable["border"].values()])
        log["border_shift"] = float(jnp.mean(jnp.abs(borders - 0.5)))
    log["kept"] = log["loss_reconstructed"] < loss_rtn or not config.fallback_to_nearest
    if log["kept"]:
        log["loss_final"] = log["loss_reconstructed"]
        result = (hard_weights, final_acts)
    else:
        result = (rtn_weights, acts_out)
    log["seconds"] = time.perf_counter() - t0
    if cache is not None and cache_key is not None:
        cache.put(cache_key, _leaves(result), log)
    return out_spec, *result, log


def _without_borders(spec: BlockSpec) -> BlockSpec:
    return dataclasses.replace(spec, acts=tuple(dataclasses.replace(a, granularity=None) for a in spec.acts))


def _leaves(tree) -> dict[str, np.ndarray]:
    """A pytree of arrays as {path string: array}, for a cache file."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(v) for path, v in flat}


def _restore(template, arrays: dict[str, np.ndarray]):
    """`template`'s pytree with every leaf taken from `arrays` (as written by `_leaves`)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    missing = [jax.tree_util.keystr(p) for p, _ in flat if jax.tree_util.keystr(p) not in arrays]
    if missing:
        raise ValueError(f"a cached block lacks {missing[:3]}: the cache entry does not match this block; delete it")
    values = []
    for path, leaf in flat:
        value = jnp.asarray(arrays[jax.tree_util.keystr(path)])
        if value.shape != jnp.shape(leaf):
            raise ValueError(
                f"a cached block's {jax.tree_util.keystr(path)} has shape {value.shape}, not {jnp.shape(leaf)}: "
                "the cache entry does not match this block; delete it"
            )
        values.append(value)
    return jax.tree_util.tree_unflatten(treedef, values)


class BlockCache(Protocol):
    """Where reconstructed blocks are kept between runs (see `reconstruct_block`)."""

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None: ...

    def put(self, key: str, arrays: dict[str, np.ndarray], log: dict) -> None: ...


# --------------------------------------------------------------------------------------------
# The whole network


def _first_last_grid(config: ReconConfig, bits: int, samples=None) -> GridSpec:
    # The 8-bit first and last layers stay on the int grid whatever the low-bit kind is.
    kind = "int" if config.first_last_bits is not None else config.kind
    signed = _signed(samples)
    return grid_spec(kind, bits, signed=signed)


def _round_layer(p: dict, grid: GridSpec) -> dict:
    state = init_weight_rounding(p["w"], grid)
    return {"w": nearest_weight(p["w"], state, grid), "b": p["b"]}


def run_digest(params, images, config: ReconConfig) -> str:
    """A name for everything a reconstruction depends on: the folded float weights, the calibration
    images and every setting that changes numbers (not `progress`)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(images, np.float32)).tobytes())
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


def quantize_resnet(
    model: nnx.Module, calibration_images, config: ReconConfig | None = None, *, block_cache: BlockCache | None = None
) -> tuple[QuantizedResNet, dict]:
    """Post-training quantization of a frugal ResNet by `config.method` ("rtn", "qdrop", "aquant").

    `calibration_images` (NHWC) supply the first ``config.calibration_size`` images. The input
    model is not modified. Returns the quantized network and a log (per-block reconstruction
    errors and loss histories, and ``fallbacks``: how many blocks kept round-to-nearest because
    their reconstruction did not beat it). With a `block_cache` every reconstructed block is stored
    under ``run_digest(...)-block<i>`` and restored on the next run with the same inputs.
    """
    config = config or ReconConfig()
    spec, params = fold_resnet(model)
    images = np.asarray(calibration_images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"calibration_images must be NHWC images of rank 4, got shape {images.shape}")
    n = min(config.calibration_size, len(images))
    if n < config.batch_size:
        raise ValueError(
            f"the calibration set has {n} images (calibration_size={config.calibration_size}, "
            f"{len(images)} given), fewer than one batch of batch_size={config.batch_size}"
        )
    images = jnp.asarray(images[:n])
    digest = run_digest(params, images, config) if block_cache is not None else None
    t0 = time.perf_counter()
    edge_w = config.first_last_bits or config.weight_bits
    edge_a = config.first_last_bits or config.act_bits

    stem_grid = _first_last_grid(config, edge_a, images)
    scale, offset = calibrate_activation(images, stem_grid)
    acts = {"stem": {"scale": scale, "offset": offset}, "blocks": []}
    weights = {"stem": _round_layer(params["stem"], _first_last_grid(config, edge_w)), "blocks": []}
    spec = dataclasses.replace(spec, stem_act=ActSpec("stem", stem_grid))

    def run_stem(x, w, quant):
        x = spec.activation(apply_conv(quant(x), w, spec.stem))
        if spec.maxpool:
            x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
        return x

    stem_quant = activation_quantizer(spec.stem_act, acts["stem"])
    xq = _batched(jax.jit(lambda x: run_stem(x, weights["stem"], stem_quant)), images)
    xfp = _batched(jax.jit(lambda x: run_stem(x, params["stem"], lambda v: v)), images)

    block_specs, logs = [], []
    for i, block in enumerate(spec.blocks):
        label = f"{config.method} W{config.weight_bits}A{config.act_bits} block {i + 1}/{len(spec.blocks)}"
        bspec, bweights, bacts, log = reconstruct_block(
            block,
            params["blocks"][i],
            xq,
            xfp,
            spec.activation,
            config,
            block_index=i,
            label=label,
            cache=block_cache,
            cache_key=None if digest is None else f"{digest}-block{i}",
        )
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
    report = {
        "method": config.method,
        "weight_bits": config.weight_bits,
        "act_bits": config.act_bits,
        "first_last_bits": config.first_last_bits,
        "calibration_size": int(n),
        "iterations": config.iterations if config.method != "rtn" else 0,
        "fallbacks": sum(1 for b in logs if config.method != "rtn" and not b["kept"]),
        "seconds": time.perf_counter() - t0,
        "blocks": logs,
    }
    return QuantizedResNet(weights, acts, spec), report
