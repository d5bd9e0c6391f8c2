"""Training for the CTT-Net comparison, all through `frugal.scripts.harness.Trainer`.

The CPU protocol (frozen features): per fold, each view's backbone is trained once as a single-view
regressor of the post-op acuity on the training eyes, its pooled features are cached, and every
fusion head then trains on the same cached features, so the heads differ only in how they fuse.
`train_end_to_end` trains backbones and a head together, as the reference does, for the models a
config names. Every run selects its step on an inner validation split of the training eyes (best
validation loss), never on the test fold.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models import ctt_net
from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.transforms import prng
from frugal.transforms.outcome_losses import outcome_loss

# name -> (description, uses images, uses pre-op VA)
MODELS = {
    "pre_only": ("pre-op VA alone (isotonic regression, no images)", False, True),
    "single_h": ("horizontal view alone", True, False),
    "single_v": ("vertical view alone", True, False),
    "single_h_pre": ("horizontal view + pre-op VA", True, True),
    "single_v_pre": ("vertical view + pre-op VA", True, True),
    "late": ("late fusion of both views", True, False),
    "late_pre": ("late fusion of both views + pre-op VA", True, True),
    "full_attention": ("full attention over all five tokens", True, True),
    "ctt": ("CTT-Net (cross-token rounds by swapping)", True, True),
    "ctt_f": ("CTT-Net ctt_f variant (6 rounds, global token per stream, unbounded)", True, True),
    "ctt_no_va": ("CTT-Net ablation: VA tokens are learned constants", True, True),
    "ctt_no_swap": ("CTT-Net ablation: no token swap (views meet only at the read-out)", True, True),
    "ctt_no_hinge": ("CTT-Net ablation: trained without the hinge term", True, True),
}
BASELINES = ("pre_only", "single_h", "single_v", "single_h_pre", "single_v_pre", "late", "late_pre", "full_attention")


@dataclasses.dataclass(frozen=True)
class HeadSettings:
    """What every fusion-head run shares (one budget for all models)."""

    dim: int = 128
    rounds: int = 4
    dropout: float = 0.1
    steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 5e-4
    optimizer: str = "adamw"
    hinge_weight: float = 2.0
    eval_every: int = 100


def make_head(name: str, feature_dim: int, settings: HeadSettings, rngs: nnx.Rngs) -> nnx.Module:
    """The fusion head of model `name` (not `pre_only`, which has none)."""
    kw = dict(dim=settings.dim, dropout=settings.dropout, rngs=rngs)
    att = dict(kw, heads=4, inner_dim=4 * settings.dim)
    if name == "ctt" or name == "ctt_no_hinge":
        return ctt_net.CrossTokenHead(feature_dim, rounds=settings.rounds, **att)
    if name == "ctt_f":
        return ctt_net.CrossTokenHead(feature_dim, variant="ctt_f", **att)
    if name == "ctt_no_va":
        return ctt_net.CrossTokenHead(feature_dim, rounds=settings.rounds, va_tokens=False, **att)
    if name == "ctt_no_swap":
        return ctt_net.CrossTokenHead(feature_dim, rounds=settings.rounds, swap=False, **att)
    if name == "full_attention":
        return ctt_net.FullAttentionHead(feature_dim, depth=2 + settings.rounds, **att)
    if name in ("late", "late_pre"):
        return ctt_net.LateFusionHead(feature_dim, use_pre=name == "late_pre", **kw)
    if name.startswith("single_"):
        return ctt_net.SingleViewHead(feature_dim, view=name[7], use_pre=name.endswith("_pre"), **kw)
    raise ValueError(f"model {name!r} has no head; models: {list(MODELS)}")


def hinge_weight_of(name: str, settings: HeadSettings) -> float:
    return 0.0 if name == "ctt_no_hinge" else settings.hinge_weight


@functools.lru_cache(maxsize=32)
def make_optimizer(kind: str, learning_rate: float, steps: int) -> optax.GradientTransformation:
    """`adamw`: warm-up + cosine decay. `sgd`: the reference's recipe scaled to `steps` (momentum 0.9,
    weight decay 5e-4, linear warm-up over 1/12 of the run, x0.1 at 1/2, 3/4 and 11/12 of it: 100 and
    600/900/1100 of its 1,200 iterations). Cached: one object per recipe, so the Trainers of all folds
    share a graph structure and compile their step once."""
    if kind == "adamw":
        warmup = max(1, min(steps // 10, 200))
        return optax.adamw(optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, max(steps, warmup + 1)), 1e-4)
    if kind == "sgd":
        warmup = max(1, steps // 12)
        decay = optax.piecewise_constant_schedule(
            learning_rate, {steps // 2: 0.1, (3 * steps) // 4: 0.1, (11 * steps) // 12: 0.1}
        )
        schedule = optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup), decay], [warmup])
        return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9))
    raise ValueError(f"optimizer={kind!r}: use 'adamw' or 'sgd'")


def split_train_val(train_idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded inner validation split of the training eyes (model selection never sees the test fold)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction {fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    perm = train_idx[rng.permutation(len(train_idx))]
    n_val = max(1, int(round(fraction * len(perm))))
    if n_val >= len(perm):
        raise ValueError(f"{len(train_idx)} training eyes leave none after the validation split")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _BestKeeper:
    """An `eval_fn` for Trainer that remembers the model state at the lowest validation loss."""

    def __init__(self, val_loss: Callable[[nnx.Module], float]):
        self.val_loss = val_loss
        self.best = float("inf")
        self.best_state = None
        self.best_step = 0
        self.evaluations = 0

    def __call__(self, state) -> dict:
        self.evaluations += 1
        loss = float(self.val_loss(state.model))
        if loss < self.best:
            self.best = loss
            self.best_state = jax.device_get(nnx.state(state.model))
            self.best_step = self.evaluations
        return {"val_loss": loss}

    def restore_into(self, model: nnx.Module) -> nnx.Module:
        if self.best_state is not None:
            nnx.update(model, self.best_state)
        return model


def _batches(train_idx: np.ndarray, batch_size: int, seed: int):
    """Epoch-seeded permutations of the training eyes: batch `step` is a pure function of step."""
    from frugal.scripts.data import BatchSampler

    sampler = BatchSampler(len(train_idx), batch_size, seed)
    return lambda step, rows: {"idx": train_idx[sampler.indices(step)][rows].astype(np.int32)}


# --------------------------------------------------------------------------------------------
# Per-view backbones (single-view regressors) and their cached features


@dataclasses.dataclass(frozen=True)
class BackboneSettings:
    width: int = 16
    depth: int = 10
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    max_shift: int = 4
    eval_every: int = 50


def _augment(images: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
    """Random translation (device decentring) and a random lateral flip per B-scan."""
    from frugal.scripts.harness import random_translate

    k1, k2 = jax.random.split(rng)
    x = images[..., None]
    if max_shift:
        x = random_translate(x, k1, max_shift)
    flip = prng.bernoulli(k2, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1], x)


def _single_view_prediction(model, images):
    return jax.nn.sigmoid(model(images)[:, 0]) * ctt_net.MAX_VA


# Step functions, validation losses and predictors live at module level (and step factories are
# cached) so that every fold and seed of one model reuses one compiled program.


@functools.lru_cache(maxsize=8)
def _backbone_step(max_shift: int):
    def loss_fn(model, batch, rng, constants):
        model.train()
        x = _augment(constants["images"][batch["idx"]], rng, max_shift)
        return jnp.mean((_single_view_prediction(model, x) - constants["post"][batch["idx"]]) ** 2)

    return loss_step(loss_fn)


@nnx.jit
def _backbone_val_mse(model, x, y):
    model.eval()
    return jnp.mean((_single_view_prediction(model, x[..., None]) - y) ** 2)


@nnx.jit
def _features(model, x):
    model.eval()
    return model.features(x[..., None])


@functools.lru_cache(maxsize=8)
def _head_step(hinge: float):
    def loss_fn(model, batch, rng, c):
        model.train()
        i = batch["idx"]
        return outcome_loss(model(c["h"][i], c["v"][i], c["pre"][i]), c["post"][i], c["pre"][i], hinge_weight=hinge)

    return loss_step(loss_fn, has_aux=True)


@functools.partial(nnx.jit, static_argnames="hinge")
def _val_loss(model, c, i, *, hinge: float):
    model.eval()
    return outcome_loss(model(c["h"][i], c["v"][i], c["pre"][i]), c["post"][i], c["pre"][i], hinge_weight=hinge)[0]


@nnx.jit
def _predict(model, h, v, p):
    model.eval()
    return model(h, v, p)


@nnx.jit
def _attention_maps(model, h, v, p):
    model.eval()
    return model.attention_maps(h, v, p)


def attention_maps(head: nnx.Module, feat_h, feat_v, pre) -> np.ndarray:
    """`head.attention_maps` (token-to-token attention flow) in eval mode as one compiled program; called
    eagerly it dispatches a few hundred small ops, each compiled on its own."""
    return np.asarray(_attention_maps(head, jnp.asarray(feat_h), jnp.asarray(feat_v), jnp.asarray(pre)))


@functools.lru_cache(maxsize=8)
def _end_to_end_step(hinge: float, max_shift: int):
    def loss_fn(m, batch, rng, c):
        m.train()
        i = batch["idx"]
        kh, kv = jax.random.split(rng)
        xh = _augment(c["h"][i], kh, max_shift)[..., 0]
        xv = _augment(c["v"][i], kv, max_shift)[..., 0]
        return outcome_loss(m(xh, xv, c["pre"][i]), c["post"][i], c["pre"][i], hinge_weight=hinge)

    return loss_step(loss_fn, has_aux=True)


def _batched(fn, model, arrays, batch_size: int) -> np.ndarray:
    """`fn(model, *chunk)` over row chunks of `arrays`, each chunk zero-padded to a power of two (at most
    `batch_size`) so that folds, validation splits and a last partial chunk share a few compiled shapes
    instead of one program per row count. Rows are independent in eval mode; padding rows are dropped."""
    n = len(arrays[0])
    out = []
    for i in range(0, n, batch_size):
        rows = min(batch_size, n - i)
        padded = min(batch_size, 1 << (rows - 1).bit_length())
        chunk = []
        for a in arrays:
            part = np.asarray(a[i : i + rows])
            chunk.append(jnp.asarray(np.pad(part, [(0, padded - rows)] + [(0, 0)] * (part.ndim - 1))))
        out.append(np.asarray(fn(model, *chunk))[:rows])
    return np.concatenate(out)


def _train(state, step_fn, keeper, *, steps, eval_every, seed, progress, label, constants, train_idx, batch_size):
    trainer = Trainer(
        state,
        step_fn,
        config=TrainerConfig(
            num_steps=steps,
            seed=seed,
            log_every=eval_every,
            eval_every=eval_every,
            progress=progress,
            progress_label=label,
        ),
        constants=constants,
        eval_fn=keeper,
    )
    batch_size = min(batch_size, len(train_idx))
    result = trainer.run(_batches(train_idx, batch_size, seed), batch_size)
    model = keeper.restore_into(result.state.model)
    model.eval()
    return model, result


def train_backbone(
    images: np.ndarray,
    post: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: BackboneSettings,
    *,
    seed: int,
    progress: bool = False,
    label: str = "backbone",
) -> tuple[nnx.Module, dict]:
    """A per-view ResNet trained to regress the post-op VA from one view; returns it at its best
    validation step, and a summary of the run."""
    backbone = ctt_net.view_backbone(width=settings.width, depth=settings.depth, rngs=nnx.Rngs(seed))
    state = TrainState(backbone, make_optimizer("adamw", settings.learning_rate, settings.steps))
    images_j, post_j = jnp.asarray(images), jnp.asarray(post)
    keeper = _BestKeeper(lambda m: _backbone_val_mse(m, images_j[val_idx], post_j[val_idx]))
    model, result = _train(
        state,
        _backbone_step(settings.max_shift),
        keeper,
        steps=settings.steps,
        eval_every=settings.eval_every,
        seed=seed,
        progress=progress,
        label=label,
        constants={"images": images_j, "post": post_j},
        train_idx=train_idx,
        batch_size=settings.batch_size,
    )
    return model, {"val_mse": keeper.best, "seconds": result.seconds, "history": result.history}


def extract_features(backbone: nnx.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Pooled features (n, F) of every image, in eval mode."""
    return _batched(_features, backbone, (images,), batch_size).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Fusion heads on cached features


def train_head(
    name: str,
    feat_h: np.ndarray,
    feat_v: np.ndarray,
    pre: np.ndarray,
    post: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: HeadSettings,
    *,
    seed: int,
    progress: bool = False,
) -> tuple[nnx.Module, dict]:
    """Model `name`'s head trained on cached features with the MSE + hinge loss; best validation step."""
    head = make_head(name, feat_h.shape[1], settings, nnx.Rngs(seed))
    state = TrainState(head, make_optimizer(settings.optimizer, settings.learning_rate, settings.steps))
    hinge = hinge_weight_of(name, settings)
    data = {k: jnp.asarray(v) for k, v in dict(h=feat_h, v=feat_v, pre=pre, post=post).items()}
    val_j = jnp.asarray(val_idx)
    keeper = _BestKeeper(lambda m: _val_loss(m, data, val_j, hinge=hinge))
    model, result = _train(
        state,
        _head_step(hinge),
        keeper,
        steps=settings.steps,
        eval_every=settings.eval_every,
        seed=seed,
        progress=progress,
        label=name,
        constants=data,
        train_idx=train_idx,
        batch_size=settings.batch_size,
    )
    return model, {"val_loss": keeper.best, "seconds": result.seconds, "history": result.history}


def predict_head(head: nnx.Module, feat_h, feat_v, pre, batch_size: int = 1024) -> np.ndarray:
    """Post-op VA predictions of a trained head (eval mode), batched."""
    return _batched(_predict, head, (feat_h, feat_v, pre), batch_size)


def fit_pre_only(pre_train: np.ndarray, post_train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The tabular baseline: post-op VA as a monotone (isotonic) function of the pre-op VA, the
    strongest single predictor in clinical cohorts."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.01, y_max=ctt_net.MAX_VA, increasing=True, out_of_bounds="clip")
    model.fit(np.asarray(pre_train, np.float64), np.asarray(post_train, np.float64))
    return lambda pre: model.predict(np.asarray(pre, np.float64)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# End to end (backbones + head), the reference's own training


def train_end_to_end(
    name: str,
    images_h: np.ndarray,
    images_v: np.ndarray,
    pre: np.ndarray,
    post: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    backbone: BackboneSettings,
    head: HeadSettings,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: bool = False,
) -> tuple[nnx.Module, dict]:
    """Two backbones and model `name`'s head trained together from scratch (MSE + hinge)."""
    rngs = nnx.Rngs(seed)
    bh = ctt_net.view_backbone(width=backbone.width, depth=backbone.depth, rngs=rngs)
    bv = ctt_net.view_backbone(width=backbone.width, depth=backbone.depth, rngs=rngs)
    model = ctt_net.TwoViewModel(bh, bv, make_head(name, bh.num_features, head, rngs))
    state = TrainState(model, make_optimizer(head.optimizer, learning_rate, steps))
    hinge = hinge_weight_of(name, head)
    data = {k: jnp.asarray(v) for k, v in dict(h=images_h, v=images_v, pre=pre, post=post).items()}
    val_j = jnp.asarray(val_idx)
    keeper = _BestKeeper(lambda m: _val_loss(m, data, val_j, hinge=hinge))
    trained, result = _train(
        state,
        _end_to_end_step(hinge, backbone.max_shift),
        keeper,
        steps=steps,
        eval_every=head.eval_every,
        seed=seed,
        progress=progress,
        label=f"{name} end to end",
        constants=data,
        train_idx=train_idx,
        batch_size=batch_size,
    )
    return trained, {"val_loss": keeper.best, "seconds": result.seconds, "history": result.history}


def predict_end_to_end(model: ctt_net.TwoViewModel, images_h, images_v, pre, batch_size: int = 128) -> np.ndarray:
    """Post-op VA predictions of an end-to-end model (eval mode), batched."""
    return _batched(_predict, model, (images_h, images_v, pre), batch_size)
