"""The training harness every experiment reuses.

`Trainer` runs a user step function over an arbitrary Flax NNX object graph (one model and one
optimizer, or two of each for a GAN, or an encoder pair for a retriever): the graph is split once
into a static graphdef and arrays, and each step is one jit-compiled pure function
`(arrays, batch, rng) -> (arrays, metrics)`. On top of that loop it adds

- data parallelism through a `jax.sharding.Mesh`: the batch is sharded on the `data` axis and the
  state replicated (or placed by a user `state_sharding` function, which leaves room for a
  `model` axis); on several hosts each process feeds only its own rows with
  `jax.make_array_from_process_local_data`;
- orbax checkpoints written atomically every `checkpoint_every` steps, and resume from the latest
  one; a resumed run is bit-identical to an uninterrupted one because batches and random keys are
  functions of the step number;
- metrics appended to `metrics.jsonl` (only process 0 writes), and a tqdm progress bar.

`fit_classifier` is the supervised image-classification recipe built on it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from frugal.scripts.data import BatchSampler, ImageDataset, eval_batches
from frugal.transforms import prng

PyTree = Any
StepFn = Callable[[Any, PyTree, jax.Array], dict]


# --------------------------------------------------------------------------------------------
# Meshes and batch placement


def data_parallel_mesh(num_devices: int | None = None, *, axis: str = "data") -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (all devices, all processes, by default)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices} must be between 1 and the {len(devices)} available devices")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, mesh: Mesh, axis: str = "data") -> None:
    shards = mesh.shape[axis]
    if batch_size % shards:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by the {shards} devices on the mesh's "
            f"'{axis}' axis; use a multiple of {shards}"
        )


def local_rows(global_batch_size: int, sharding: NamedSharding) -> slice:
    """The contiguous rows of a global batch whose shards live on this process's devices."""
    index_map = sharding.addressable_devices_indices_map((global_batch_size,))
    starts = [idx[0].start or 0 for idx in index_map.values()]
    stops = [global_batch_size if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
    start, stop = min(starts), max(stops)
    if sum(b - a for a, b in {(a, b) for a, b in zip(starts, stops)}) != stop - start:
        raise ValueError("this process's batch shards are not contiguous; order the mesh devices by process")
    return slice(start, stop)


def place_batch(local_batch: PyTree, mesh: Mesh, global_batch_size: int, axis: str = "data") -> PyTree:
    """Turns this process's rows of a batch into global arrays sharded on `axis` (leading dim)."""
    sharding = NamedSharding(mesh, P(axis))

    def place(x):
        x = np.asarray(x)
        global_shape = (global_batch_size,) + x.shape[1:]
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(place, local_batch)


# --------------------------------------------------------------------------------------------
# Checkpoints


class CheckpointError(ValueError):
    """A checkpoint directory exists but cannot be restored into the current state."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(pure: PyTree) -> PyTree:
    # orbax stores plain arrays; typed PRNG keys (e.g. nnx.Rngs inside Dropout) go as raw key data.
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, pure)


class Checkpointer:
    """orbax CheckpointManager around an NNX state's pure dict; saves are atomic (temp dir + rename)."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).absolute()
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: nnx.State) -> None:
        pure = _to_savable(nnx.to_pure_dict(state))
        self.manager.save(step, args=self._ocp.args.StandardSave(pure), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, state: nnx.State) -> nnx.State:
        """Restores checkpoint `step` into a copy of `state` (same structure, shardings kept)."""
        template = nnx.to_pure_dict(state)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                jax.random.key_data(x).shape if _is_key(x) else x.shape,
                jax.random.key_data(x).dtype if _is_key(x) else x.dtype,
                sharding=getattr(x, "sharding", None),
            ),
            template,
        )
        try:
            restored = self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except Exception as err:  # orbax raises many types for missing/garbled files
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} cannot be restored: it is corrupt or was written for a "
                f"different model ({type(err).__name__}). Delete {self.directory} or use another --workdir"
            ) from None
        restored = jax.tree.map(lambda t, r: jax.random.wrap_key_data(r) if _is_key(t) else r, template, restored)
        new_state = jax.tree.map(lambda x: x, state)
        nnx.replace_by_pure_dict(new_state, restored)
        return new_state

    def close(self) -> None:
        self.manager.close()


# --------------------------------------------------------------------------------------------
# The generic loop


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    num_steps: int
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end (when a workdir is given)
    max_to_keep: int = 2
    log_every: int = 50
    eval_every: int = 0  # 0: `eval_fn` (when given) only after the last step
    progress: bool = True
    progress_label: str = "train"
    data_axis: str = "data"

    def __post_init__(self):
        if self.num_steps < 0:
            raise ValueError(f"num_steps={self.num_steps} must be >= 0")
        if self.checkpoint_every < 0 or self.log_every < 1 or self.eval_every < 0:
            raise ValueError("checkpoint_every and eval_every must be >= 0, log_every >= 1")


def read_metrics(workdir) -> list[dict]:
    """Every record in a run's `metrics.jsonl`: the whole logged history, also the part logged before a
    resume (a `TrainResult.history` holds only what its own `run` logged)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclasses.dataclass
class TrainResult:
    state: Any  # the trained NNX object graph
    history: list[dict]  # logged metrics, one dict per logged step
    start_step: int  # > 0 when the run resumed from a checkpoint
    seconds: float
    checkpoint_dir: Path | None


_STEP_CACHE: dict = {}
_STEP_CACHE_SIZE = 64


def _compiled_step(graphdef, step_fn, with_constants: bool, shardings, replicated):
    """The jitted step for one (graph structure, step function, placement): shared by every Trainer
    that has them, so cross-validation folds and seeds of one model compile it once, not per run.
    Systems get the reuse by passing the same `step_fn` object (and the same optimizer object, which
    is part of the graph structure) to each Trainer."""
    leaves, treedef = jax.tree.flatten(shardings)
    try:
        key = (graphdef, step_fn, with_constants, treedef, tuple(leaves), replicated)
        hash(key)
    except TypeError:  # an unhashable step function or graph: compile for this Trainer alone
        key = None
    if key is not None and key in _STEP_CACHE:
        return _STEP_CACHE[key]

    def pure_step(arrays, batch, rng, constants):
        obj = nnx.merge(graphdef, arrays)
        metrics = step_fn(obj, batch, rng, constants) if with_constants else step_fn(obj, batch, rng)
        return nnx.state(obj), metrics

    compiled = jax.jit(pure_step, donate_argnums=0, out_shardings=(shardings, replicated))
    if key is not None:
        if len(_STEP_CACHE) >= _STEP_CACHE_SIZE:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
        _STEP_CACHE[key] = compiled
    return compiled


class Trainer:
    """Runs `step_fn(state, batch, rng) -> metrics` under jit for `num_steps` steps.

    `state` is any NNX object graph (typically a `TrainState`); `step_fn` mutates it NNX-style
    (e.g. `state.optimizer.update(state.model, grads)`) and returns scalar metrics.
    `batch_at(step, rows)` returns this process's rows (a slice of the global batch) of step
    `step`'s batch as numpy arrays; `global_batch_size` is the batch over all processes.

    What systems need beyond a model and an optimizer, all through the same loop:
    - frozen parts: keep them in `state` and differentiate only the trainable part in `step_fn`
      (an `nnx.Optimizer(..., wrt=filter)` updates only what it holds); several optimizers are
      several attributes of `state`.
    - `constants`: a pytree of arrays placed on the devices once (replicated) and passed to every
      step as a fourth argument, `step_fn(state, batch, rng, constants)`: a full graph, cached
      features of a frozen encoder, a whole small training set. They are jit arguments, never
      baked into the program as literals, and never checkpointed.
    - `eval_fn(state) -> {name: float}`: run (outside the step) every `eval_every` steps and after
      the last one; its values join that step's record in the history and `metrics.jsonl`.
    A finished run in `workdir` is a cache: running it again restores the last checkpoint and
    trains zero steps. Trainers with the same graph structure, `step_fn` object and placement share
    one compiled step (folds and seeds of a cross-validation compile once).
    """

    def __init__(
        self,
        state,
        step_fn: StepFn,
        *,
        config: TrainerConfig,
        mesh: Mesh | None = None,
        workdir: str | Path | None = None,
        state_sharding: Callable[[Mesh, PyTree], PyTree] | None = None,
        constants: PyTree | None = None,
        eval_fn: Callable[[Any], dict] | None = None,
    ):
        self.config = config
        self.mesh = mesh if mesh is not None else data_parallel_mesh(1)
        self.workdir = Path(workdir) if workdir is not None else None
        self.graphdef, arrays = nnx.split(state)
        if state_sharding is None:
            shardings = jax.tree.map(lambda _: NamedSharding(self.mesh, P()), arrays)
        else:
            shardings = state_sharding(self.mesh, arrays)
        self.state_shardings = shardings
        # may_alias=False: steps donate their input buffers, and those must never be the caller's
        # own arrays (a model handed to the trainer stays usable afterwards).
        self.arrays = jax.tree.map(
            lambda x, s: (
                jax.device_put(x, s, may_alias=False)
                if jax.process_count() == 1
                else jax.make_array_from_callback(x.shape, s, lambda idx, x=x: np.asarray(x)[idx])
            ),
            arrays,
            shardings,
        )
        graphdef = self.graphdef
        replicated = NamedSharding(self.mesh, P())
        self.eval_fn = eval_fn
        self.constants = None if constants is None else jax.device_put(constants, replicated)
        with_constants = constants is not None

        self._step = _compiled_step(graphdef, step_fn, with_constants, shardings, replicated)

    def state(self):
        """The current NNX object graph (arrays stay on the devices)."""
        return nnx.merge(self.graphdef, self.arrays)

    def _metrics_path(self) -> Path | None:
        return self.workdir / "metrics.jsonl" if self.workdir is not None else None

    def _truncate_metrics(self, keep_through: int) -> None:
        path = self._metrics_path()
        if path is None or not path.exists() or jax.process_index() != 0:
            return
        lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= keep_through]
        path.write_text("".join(l + "\n" for l in lines))

    def run(self, batch_at: Callable[[int, slice], PyTree], global_batch_size: int) -> TrainResult:
        from tqdm.auto import tqdm

        cfg = self.config
        check_batch_size(global_batch_size, self.mesh, cfg.data_axis)
        rows = local_rows(global_batch_size, NamedSharding(self.mesh, P(cfg.data_axis)))
        checkpointer = None
        start = 0
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            checkpointer = Checkpointer(self.workdir / "checkpoints", max_to_keep=cfg.max_to_keep)
            latest = checkpointer.latest_step()
            if latest is not None:
                self.arrays = checkpointer.restore(latest, self.arrays)
                start = latest
            self._truncate_metrics(start)
        base_key = jax.random.key(cfg.seed)
        history: list[dict] = []
        t0 = time.perf_counter()
        metrics_file = None
        if self._metrics_path() is not None and jax.process_index() == 0:
            metrics_file = self._metrics_path().open("a")
        bar = tqdm(total=cfg.num_steps, initial=start, disable=not cfg.progress, desc=cfg.progress_label, leave=False)
        try:
            for step in range(start, cfg.num_steps):
                batch = place_batch(batch_at(step, rows), self.mesh, global_batch_size, cfg.data_axis)
                rng = jax.random.fold_in(base_key, step)
                self.arrays, metrics = self._step(self.arrays, batch, rng, self.constants)
                done = step + 1
                evaluate = self.eval_fn is not None and (
                    (cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.num_steps
                )
                if done % cfg.log_every == 0 or done == cfg.num_steps or evaluate:
                    record = {
                        "step": done,
                        **{k: float(v) for k, v in metrics.items()},
                        **({k: float(v) for k, v in self.eval_fn(self.state()).items()} if evaluate else {}),
                        "seconds": time.perf_counter() - t0,
                    }
                    history.append(record)
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "seconds")})
                if checkpointer is not None and (
                    (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.num_steps
                ):
                    checkpointer.save(done, self.arrays)
                bar.update(1)
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
            if checkpointer is not None:
                checkpointer.close()
        return TrainResult(
            self.state(), history, start, time.perf_counter() - t0, checkpointer.directory if checkpointer else None
        )


# --------------------------------------------------------------------------------------------
# Supervised image classification


class TrainState(nnx.Module):
    """A model and its optimizer, the usual object graph handed to `Trainer`."""

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, *, wrt=nnx.Param):
        # wrt: the trainable part (an nnx filter); the rest of the model stays frozen.
        self.model = model
        self.optimizer = nnx.Optimizer(model, tx, wrt=wrt)


def random_translate(images: jax.Array, rng: jax.Array, max_shift: int) -> jax.Array:
    """Per-example random translation by up to `max_shift` pixels (zero padding), a cheap augmentation."""
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = prng.randint(rng, (n, 2), 0, 2 * max_shift + 1)
    crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def classification_step(max_shift: int = 0) -> StepFn:
    """Cross-entropy train step for a TrainState whose model maps images to logits."""

    def step(state: TrainState, batch, rng):
        images = batch["image"]
        if max_shift:
            images = random_translate(images, rng, max_shift)
        model = state.model
        model.train()

        def loss_fn(model):
            logits = model(images)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
            return loss, logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        state.optimizer.update(model, grads)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return {"loss": loss, "accuracy": accuracy}

    return step


def loss_step(loss_fn: Callable[..., Any], *, has_aux: bool = False) -> StepFn:
    """A train step for a `TrainState` from a loss alone: `loss_fn(model, batch, rng, constants)`
    returns a scalar loss; its gradient updates `state.optimizer`.

    Only what the optimizer holds (its `wrt` filter) is differentiated, so parts of the model left
    out of it stay frozen at no gradient cost. With `has_aux`, `loss_fn` returns
    `(loss, {name: scalar})` and those metrics join `loss`.

    Returns `{"loss": loss, ...}`. `constants` is None when the Trainer was given none. Systems pass
    this to `Trainer` instead of writing the gradient/update lines themselves.
    """

    def step(state: TrainState, batch, rng, constants=None):
        grad_fn = nnx.value_and_grad(
            lambda model: loss_fn(model, batch, rng, constants),
            argnums=nnx.DiffState(0, state.optimizer.wrt),
            has_aux=has_aux,
        )
        out, grads = grad_fn(state.model)
        state.optimizer.update(state.model, grads)
        loss, metrics = out if has_aux else (out, {})
        return {"loss": loss, **metrics}

    return step


@nnx.jit
def _eval_sums(model, images, labels, weights):
    model.eval()
    logits = model(images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jnp.sum(correct * weights), jnp.sum(losses * weights)


def evaluate_classifier(model: nnx.Module, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256) -> dict:
    """Accuracy and mean loss over every example (the last batch is padded and masked)."""
    if len(images) == 0:
        raise ValueError("evaluate_classifier: no examples to evaluate")
    correct = loss = 0.0
    for idx, weights in eval_batches(len(images), batch_size):
        c, l = _eval_sums(model, jnp.asarray(images[idx]), jnp.asarray(labels[idx]), jnp.asarray(weights))
        correct += float(c)
        loss += float(l)
    return {"accuracy": correct / len(images), "loss": loss / len(images)}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_shift: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 50
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")


@dataclasses.dataclass
class FitResult:
    model: nnx.Module
    test_accuracy: float
    test_loss: float
    train_loss: float
    seconds: float
    history: list[dict]
    checkpoint_dir: Path | None
    resumed_from: int


def make_optimizer(config: FitConfig) -> optax.GradientTransformation:
    # Linear warm-up, then cosine decay to zero at the last step; warm-up never takes the whole run.
    warmup = min(config.warmup_steps, config.steps // 2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, max(config.steps, warmup + 1))
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def fit_classifier(
    model: nnx.Module,
    dataset: ImageDataset,
    config: FitConfig | None = None,
    *,
    mesh: Mesh | None = None,
    workdir: str | Path | None = None,
    **overrides,
) -> FitResult:
    """Trains `model` (not modified: a trained copy is returned) on `dataset` and evaluates it.

    Keyword overrides (steps=..., batch_size=..., ...) replace fields of `config`.
    """
    config = dataclasses.replace(config or FitConfig(), **overrides)
    model = nnx.clone(model)
    sampler = BatchSampler(len(dataset.train_x), config.batch_size, config.seed)
    state = TrainState(model, make_optimizer(config))
    trainer = Trainer(
        state,
        classification_step(config.max_shift),
        config=TrainerConfig(
            num_steps=config.steps,
            seed=config.seed,
            checkpoint_every=config.checkpoint_every,
            log_every=config.log_every,
            progress=config.progress,
        ),
        mesh=mesh,
        workdir=workdir,
    )

    def batch_at(step: int, rows: slice):
        idx = sampler.indices(step)[rows]
        return {"image": dataset.train_x[idx], "label": dataset.train_y[idx]}

    result = trainer.run(batch_at, config.batch_size)
    trained = result.state.model
    test = evaluate_classifier(trained, dataset.test_x, dataset.test_y)
    train_loss = result.history[-1]["loss"] if result.history else float("nan")
    return FitResult(
        trained,
        test["accuracy"],
        test["loss"],
        train_loss,
        result.seconds,
        result.history,
        result.checkpoint_dir,
        result.start_step,
    )
