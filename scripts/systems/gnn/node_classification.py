"""Full-graph node classification (GCN, GAT, ... from `frugal.models.gnn_layers`) through the shared
`frugal.scripts.harness.Trainer`: the graph, features, labels and masks are the Trainer's
`constants`, the accuracies its `eval_fn`, and the reported accuracy is the one at the best
validation step among the evaluations."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from frugal.models.gnn_layers import GNNClassifier
from frugal.scripts.harness import Trainer, TrainerConfig, TrainState, loss_step
from frugal.scripts.systems.gnn.graph_data import GraphDataset

EVAL_EVERY = 10  # steps between evaluations (and after the last step)


def best_evaluation(history: list[dict], *, has_val: bool) -> dict:
    """The evaluated record of a Trainer history with the highest `val_accuracy` (ties: the later
    one), or the last evaluated record when there is no validation split."""
    evaluated = [r for r in history if "test_accuracy" in r]
    if not evaluated:
        raise ValueError("the history holds no evaluation (no record with test_accuracy)")
    best = evaluated[0]
    for record in evaluated[1:]:
        if not has_val or record["val_accuracy"] >= best["val_accuracy"]:
            best = record
    return best


def train_node_classifier(
    kind: str,
    data: GraphDataset,
    *,
    steps: int = 200,
    hidden: int = 16,
    heads: int = 8,
    learning_rate: float = 0.01,
    weight_decay: float = 5e-4,
    dropout: float = 0.5,
    fused: bool = False,
    seed: int = 0,
) -> dict:
    """Full-graph training (Adam + L2 as in Kipf & Welling) on the train mask; accuracy at the best
    validation step (or the last one when there is no validation split).

    Accuracies are taken every `EVAL_EVERY` steps and after the last; among them the one with the
    highest validation accuracy wins (ties: the later step). fused=False by default: on CPU the
    segment-op Gather trains about as fast and compiles faster (GAT's fused Gather is one sparse
    product per head, forward and backward)."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if not data.train_mask.any() or not data.test_mask.any():
        raise ValueError(f"{data.name}: train and test masks must both select vertices")
    graph = data.to_graph()
    if kind in ("gcn", "gat"):
        graph = graph.with_self_loops()
    row_sums = data.x.sum(1, keepdims=True)
    x = jnp.asarray(data.x / np.where(row_sums > 0, row_sums, 1.0))  # row-normalized features
    model = GNNClassifier(
        kind,
        data.x.shape[1],
        data.num_classes,
        hidden=8 if kind == "gat" else hidden,
        heads=heads,
        dropout=dropout,
        num_relations=data.num_relations,
        rngs=nnx.Rngs(seed),
    )
    use_fused = bool(fused and model.layers[0].fused_gather)
    model.train()  # dropout on in every step; the evaluation switches it off on its own copy
    constants = {
        "graph": graph,
        "x": x,
        "labels": jnp.asarray(data.y),
        "masks": {k: jnp.asarray(getattr(data, f"{k}_mask")) for k in ("train", "val", "test")},
    }

    def masked_loss(model, batch, rng, constants):
        # Dropout draws from the model's own nnx.Rngs (part of the trained state), not from `rng`.
        logits = model(constants["graph"], constants["x"], fused=use_fused)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, constants["labels"])
        train = constants["masks"]["train"]
        return jnp.sum(losses * train) / jnp.sum(train)

    @nnx.jit
    def accuracies(model, constants):
        correct = model(constants["graph"], constants["x"], fused=use_fused).argmax(-1) == constants["labels"]
        return {
            f"{k}_accuracy": jnp.sum(correct * m) / jnp.maximum(jnp.sum(m), 1) for k, m in constants["masks"].items()
        }

    def evaluate(state) -> dict:
        state.model.eval()
        return accuracies(state.model, trainer.constants)

    trainer = Trainer(
        TrainState(model, optax.adamw(learning_rate, weight_decay=weight_decay)),
        loss_step(masked_loss),
        config=TrainerConfig(num_steps=steps, seed=seed, log_every=EVAL_EVERY, eval_every=EVAL_EVERY, progress=False),
        constants=constants,
        eval_fn=evaluate,
    )
    result = trainer.run(lambda step, rows: {}, 1)  # full graph: no batch, everything is a constant
    has_val = bool(data.val_mask.any())
    best = best_evaluation(result.history, has_val=has_val)
    majority = float(np.bincount(data.y[data.test_mask], minlength=data.num_classes).max() / data.test_mask.sum())
    return {
        "model": kind,
        "dataset": data.name,
        "source": data.source,
        "steps": steps,
        "test_accuracy": best["test_accuracy"],
        "val_accuracy": best["val_accuracy"] if has_val else None,
        "train_accuracy": best["train_accuracy"],
        "best_step": best["step"],
        "final_loss": result.history[-1]["loss"],
        "chance_uniform": 1.0 / data.num_classes,
        "chance_majority": majority,
        "seconds": result.seconds,
        "fused_gather": use_fused,
    }
