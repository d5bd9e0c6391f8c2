"""The training harness: data parallelism (8 virtual devices, 2 processes), checkpoints, resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from frugal.models.resnet import cifar_resnet8
from frugal.scripts.data import BatchSampler, load_digits
from frugal.scripts.harness import (
    Checkpointer,
    CheckpointError,
    FitConfig,
    Trainer,
    TrainerConfig,
    TrainState,
    classification_step,
    data_parallel_mesh,
    fit_classifier,
    make_optimizer,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


class SmallCNN(nnx.Module):
    """Conv + BatchNorm + ReLU + pooling + linear: cheap to compile, yet has batch statistics
    (which must be reduced across devices) and non-parameter state."""

    def __init__(self, width=4, rngs=None):
        # No conv bias: BatchNorm cancels it, its gradient is rounding noise, and Adam would amplify
        # that noise into differences between otherwise equal runs.
        self.conv = nnx.Conv(1, width, (3, 3), use_bias=False, rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.conv(x))).mean(axis=(1, 2)))


def _trainer(digits, *, devices=1, steps=3, workdir=None, checkpoint_every=0, batch_size=32, schedule_steps=6, width=4):
    # The learning-rate schedule spans `schedule_steps`, so a run stopped early is a prefix of a longer one.
    config = FitConfig(steps=schedule_steps, batch_size=batch_size, learning_rate=1e-2, warmup_steps=1)
    model = SmallCNN(width, rngs=nnx.Rngs(0))
    sampler = BatchSampler(len(digits.train_x), batch_size, seed=0)
    trainer = Trainer(
        TrainState(model, make_optimizer(config)),
        classification_step(max_shift=1),
        config=TrainerConfig(num_steps=steps, log_every=1, progress=False, checkpoint_every=checkpoint_every),
        mesh=data_parallel_mesh(devices),
        workdir=workdir,
    )

    def batch_at(step, rows):
        idx = sampler.indices(step)[rows]
        return {"image": digits.train_x[idx], "label": digits.train_y[idx]}

    return trainer, batch_at, batch_size


def _params(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(state.model, nnx.Param))]


def test_eight_device_data_parallel_step_equals_single_device(digits):
    assert len(jax.devices()) == 8, "conftest should provide 8 virtual CPU devices"
    single, batch_at, bs = _trainer(digits, devices=1)
    multi, _, _ = _trainer(digits, devices=8)
    r1 = single.run(batch_at, bs)
    r8 = multi.run(batch_at, bs)
    np.testing.assert_allclose([h["loss"] for h in r8.history], [h["loss"] for h in r1.history], rtol=1e-5, atol=1e-5)
    for a, b in zip(_params(r1.state), _params(r8.state)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
    # The state really lives on all eight devices, the batch is split across them.
    leaf = jax.tree.leaves(multi.arrays)[0]
    assert len(leaf.sharding.device_set) == 8


def test_batch_not_divisible_by_devices_is_refused(digits):
    trainer, batch_at, _ = _trainer(digits, devices=8)
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by the 8 devices"):
        trainer.run(batch_at, 12)


def test_resume_in_process_equals_uninterrupted(digits, tmp_path):
    straight, batch_at, bs = _trainer(digits, steps=6)
    reference = straight.run(batch_at, bs)
    first, _, _ = _trainer(digits, steps=4, workdir=tmp_path, checkpoint_every=2)
    first.run(batch_at, bs)
    second, _, _ = _trainer(digits, steps=6, workdir=tmp_path, checkpoint_every=2)
    resumed = second.run(batch_at, bs)
    assert resumed.start_step == 4
    for a, b in zip(_params(reference.state), _params(resumed.state)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    # metrics.jsonl holds each step once, in order, across the two runs.
    steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_corrupt_checkpoint_gives_clear_error(digits, tmp_path):
    trainer, batch_at, bs = _trainer(digits, steps=2, workdir=tmp_path)
    trainer.run(batch_at, bs)
    step_dir = tmp_path / "checkpoints" / "2"
    assert step_dir.is_dir()
    for f in step_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    again, _, _ = _trainer(digits, steps=4, workdir=tmp_path)
    with pytest.raises(CheckpointError, match="cannot be restored"):
        again.run(batch_at, bs)


def test_checkpoint_from_other_model_is_refused(digits, tmp_path):
    trainer, batch_at, bs = _trainer(digits, steps=1, workdir=tmp_path)
    trainer.run(batch_at, bs)
    other = TrainState(SmallCNN(8, rngs=nnx.Rngs(0)), optax.sgd(0.1))
    ckpt = Checkpointer(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError):
        ckpt.restore(1, nnx.state(other))


def test_fit_classifier_learns_digits_and_leaves_input_untouched(digits):
    model = cifar_resnet8(num_classes=10, in_channels=1, width=4, rngs=nnx.Rngs(0))
    before = [np.asarray(x).copy() for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    result = fit_classifier(model, digits, steps=120, batch_size=64, progress=False)
    assert result.test_accuracy > 0.7  # chance is 0.1; the tour checks the full recipe reaches >= 95%
    after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _train_cmd(workdir, json_path):
    return [
        sys.executable,
        "-m",
        "frugal.scripts.cli",
        "train",
        "--model",
        "cifar_resnet8",
        "--width",
        "4",
        "--dataset",
        "digits",
        "--steps",
        "60",
        "--batch-size",
        "32",
        "--checkpoint-every",
        "10",
        "--workdir",
        str(workdir),
        "--no-progress",
        "--json",
        str(json_path),
    ]


def _saved_steps(workdir: Path) -> list[int]:
    # Finished checkpoints only: orbax writes "<step>.orbax-checkpoint-tmp" first and renames it.
    folder = workdir / "checkpoints"
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.exists() else []


def _final_params(workdir: Path, step: int) -> dict:
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) / "default").absolute())
    return dict(jax.tree_util.tree_leaves_with_path(restored["model"]))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = subprocess.Popen(
        _train_cmd(killed, tmp_path / "k1.json"), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = _saved_steps(killed)
        if steps and max(steps) >= 20:
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(_saved_steps(killed))
    assert killed_at < 60

    resumed = subprocess.run(_train_cmd(killed, tmp_path / "k2.json"), cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert json.loads((tmp_path / "k2.json").read_text())["resumed_from_step"] >= 20
    uninterrupted = subprocess.run(_train_cmd(straight, tmp_path / "s.json"), cwd=REPO, env=env, capture_output=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr.decode()[-2000:]

    a, b = _final_params(killed, 60), _final_params(straight, 60)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=0, atol=1e-6, err_msg=str(key))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_whole_batch(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    worker = str(REPO / "tests" / "distributed_worker.py")
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, worker, str(tmp_path / f"p{i}.npz"), "2", str(i), str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    single = subprocess.run(
        [sys.executable, worker, str(tmp_path / "single.npz"), "1", "0", "0"], cwd=REPO, env=env, capture_output=True
    )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    assert single.returncode == 0, single.stderr.decode()[-3000:]
    ref = np.load(tmp_path / "single.npz")
    assert int(ref["devices"]) == 1
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        assert int(got["devices"]) == 2
        np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5, atol=1e-5)
        for key in ref.files:
            if key not in ("losses", "devices"):
                np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_model_axis_sharding_equals_single_device(digits):
    """A 4x2 (data, model) mesh with the classifier kernel split on `model` gives the same step."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    def shard_kernels(mesh, arrays):
        def spec(path, x):
            is_head_kernel = "head" in jax.tree_util.keystr(path) and x.ndim == 2
            return NamedSharding(mesh, P(None, "model") if is_head_kernel and x.shape[1] % 2 == 0 else P())

        return jax.tree_util.tree_map_with_path(spec, arrays)

    mesh = Mesh(
        np.asarray(jax.devices()).reshape(4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2
    )
    single, batch_at, bs = _trainer(digits, devices=1)
    reference = single.run(batch_at, bs)
    config = FitConfig(steps=6, batch_size=bs, learning_rate=1e-2, warmup_steps=1)
    sharded = Trainer(
        TrainState(SmallCNN(4, rngs=nnx.Rngs(0)), make_optimizer(config)),
        classification_step(max_shift=1),
        config=TrainerConfig(num_steps=3, log_every=1, progress=False),
        mesh=mesh,
        state_sharding=shard_kernels,
    )
    result = sharded.run(batch_at, bs)
    kernel = sharded.arrays["model"]["head"]["kernel"][...]
    assert kernel.sharding.spec == P(None, "model")
    np.testing.assert_allclose([h["loss"] for h in result.history], [h["loss"] for h in reference.history], rtol=1e-5)
    for a, b in zip(_params(reference.state), _params(result.state)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_two_models_two_optimizers_in_one_step():
    """The loop is not tied to one model: a GAN-style step updates two optimizers alternately."""
    import jax.numpy as jnp

    class Pair(nnx.Module):
        def __init__(self):
            self.gen = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.disc = nnx.Linear(2, 1, rngs=nnx.Rngs(1))
            self.gen_opt = nnx.Optimizer(self.gen, optax.adam(1e-2), wrt=nnx.Param)
            self.disc_opt = nnx.Optimizer(self.disc, optax.adam(1e-2), wrt=nnx.Param)

    def step(pair, batch, rng):
        noise = jax.random.normal(rng, batch["real"].shape)
        fake = pair.gen(noise)

        def d_loss(disc):
            return jnp.mean(jax.nn.softplus(-disc(batch["real"]))) + jnp.mean(jax.nn.softplus(disc(fake)))

        dl, dg = nnx.value_and_grad(d_loss)(pair.disc)
        pair.disc_opt.update(pair.disc, dg)

        def g_loss(gen):
            return jnp.mean(jax.nn.softplus(-pair.disc(gen(noise))))

        gl, gg = nnx.value_and_grad(g_loss)(pair.gen)
        pair.gen_opt.update(pair.gen, gg)
        return {"d_loss": dl, "g_loss": gl}

    real = np.random.default_rng(0).normal(3.0, 0.5, (64, 2)).astype(np.float32)
    pair = Pair()
    trainer = Trainer(pair, step, config=TrainerConfig(num_steps=3, log_every=1, progress=False))
    result = trainer.run(lambda s, rows: {"real": real[rows]}, 64)
    assert [h["step"] for h in result.history] == [1, 2, 3]
    assert int(result.state.gen_opt.step[...]) == 3 and int(result.state.disc_opt.step[...]) == 3
    moved = np.abs(np.asarray(result.state.gen.kernel[...]) - np.asarray(pair.gen.kernel[...])).max()
    assert moved > 0  # the generator trained, and the input object was left as it was


class _Linear(nnx.Module):
    def __init__(self, n: int):
        self.w = nnx.Param(jax.numpy.zeros((n,)))


def test_constants_eval_and_finished_run_as_cache(tmp_path):
    """Full-batch gradient descent on least squares with the data as `constants` equals a NumPy loop;
    `eval_fn` values land at eval_every steps; a second run of the same workdir trains nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
    lr, steps = 0.1, 12

    def step(state, batch, key, constants):
        def loss_fn(model):
            return jax.numpy.mean((constants["x"] @ model.w[...] - constants["y"]) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(state.model)
        state.optimizer.update(state.model, grads)
        return {"loss": loss}

    def make():
        return Trainer(
            TrainState(_Linear(3), optax.sgd(lr)),
            step,
            config=TrainerConfig(num_steps=steps, log_every=100, eval_every=5, progress=False),
            workdir=tmp_path,
            constants={"x": x, "y": y},
            eval_fn=lambda state: {"w0": state.model.w[...][0]},
        )

    result = make().run(lambda step, rows: {}, 1)
    w = np.zeros(3, np.float32)
    seen = {}
    for i in range(1, steps + 1):
        w = w - lr * (2.0 / len(x)) * x.T @ (x @ w - y)
        seen[i] = w[0]
    np.testing.assert_allclose(np.asarray(result.state.model.w[...]), w, rtol=1e-5, atol=1e-6)
    assert [r["step"] for r in result.history] == [5, 10, 12]
    for record in result.history:
        assert record["w0"] == pytest.approx(seen[record["step"]], rel=1e-5)
    again = make().run(lambda step, rows: {}, 1)
    assert again.start_step == steps and again.history == []
    np.testing.assert_array_equal(np.asarray(again.state.model.w[...]), np.asarray(result.state.model.w[...]))


def test_trainers_with_one_step_function_share_one_compiled_step():
    """Cross-validation folds: same graph structure + same step_fn object -> one jitted program,
    and the second Trainer's results equal a fresh compile's (nothing leaks between runs)."""
    import jax.numpy as jnp

    from frugal.scripts.harness import loss_step

    step = loss_step(lambda model, batch, rng, c: jnp.mean((model(c["x"][batch["i"]]) - 1.0) ** 2))
    tx = optax.sgd(0.1)

    def trainer(seed, step_fn):
        state = TrainState(nnx.Linear(3, 1, rngs=nnx.Rngs(seed)), tx)
        constants = {"x": jnp.asarray(np.random.default_rng(seed).normal(size=(8, 3)), jnp.float32)}
        return Trainer(state, step_fn, config=TrainerConfig(num_steps=5, progress=False), constants=constants)

    first, second = trainer(0, step), trainer(1, step)
    assert first._step is second._step
    other = loss_step(lambda model, batch, rng, c: jnp.mean(model(c["x"][batch["i"]]) ** 2))
    assert trainer(1, other)._step is not first._step
    batch_at = lambda step, rows: {"i": np.arange(4, dtype=np.int32)[rows]}
    shared = second.run(batch_at, 4).state.model.kernel[...]

    # the same run compiled on its own (an unhashable step function is never shared)
    class Unhashable:
        __hash__ = None

        def __call__(self, *a):
            return step(*a)

    alone = trainer(1, Unhashable())
    assert alone._step is not first._step
    np.testing.assert_allclose(np.asarray(alone.run(batch_at, 4).state.model.kernel[...]), np.asarray(shared))
