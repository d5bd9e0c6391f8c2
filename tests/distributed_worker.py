"""One process of the multi-process data-parallel check in test_harness.py (not a test itself).

usage: distributed_worker.py OUT.npz NUM_PROCESSES PROCESS_ID PORT
With NUM_PROCESSES == 1 it runs the single-process reference on the whole batch.
"""

import sys

import jax
import numpy as np


def _small_cnn(nnx):
    """Conv (no bias: BatchNorm cancels it) + BatchNorm + ReLU + pooling + linear; cheap to compile,
    and its batch statistics must be reduced across the two processes."""

    class SmallCNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 8, (3, 3), use_bias=False, rngs=rngs)
            self.norm = nnx.BatchNorm(8, rngs=rngs)
            self.head = nnx.Linear(8, 10, rngs=rngs)

        def __call__(self, x):
            return self.head(nnx.relu(self.norm(self.conv(x))).mean(axis=(1, 2)))

    return SmallCNN(nnx.Rngs(0))


def main() -> None:
    out, num_processes, process_id, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            f"localhost:{port}", num_processes=num_processes, process_id=process_id, initialization_timeout=120
        )
    from flax import nnx

    from frugal.scripts.data import BatchSampler, load_digits
    from frugal.scripts.harness import (
        FitConfig,
        Trainer,
        TrainerConfig,
        TrainState,
        classification_step,
        data_parallel_mesh,
        make_optimizer,
    )

    data = load_digits()
    batch_size = 32
    config = FitConfig(steps=4, batch_size=batch_size, learning_rate=1e-2, warmup_steps=1)
    model = _small_cnn(nnx)
    sampler = BatchSampler(len(data.train_x), batch_size, seed=0)

    def batch_at(step, rows):
        # Each process loads only its own rows of the global batch.
        idx = sampler.indices(step)[rows]
        return {"image": data.train_x[idx], "label": data.train_y[idx]}

    mesh = data_parallel_mesh()  # every device of every process
    trainer = Trainer(
        TrainState(model, make_optimizer(config)),
        classification_step(),
        config=TrainerConfig(num_steps=config.steps, log_every=1, progress=False),
        mesh=mesh,
    )
    result = trainer.run(batch_at, batch_size)
    params = nnx.state(result.state.model, nnx.Param)
    leaves = {
        jax.tree_util.keystr(p): np.asarray(x.addressable_data(0))
        for p, x in jax.tree_util.tree_leaves_with_path(params)
    }
    np.savez(out, losses=np.array([h["loss"] for h in result.history]), devices=len(jax.devices()), **leaves)


if __name__ == "__main__":
    main()
