"""GNN layers written as Scatter -> ApplyEdge -> Gather -> ApplyVertex steps (Flax NNX).

Every layer lists its forward pass as `steps(fused)`: a tuple of `Step(stage, method, kwargs)`.
Each method takes `(graph, state)` (state: a dict of named arrays, starting with {"x": x}) and
returns the arrays it adds. `__call__` runs the steps in order inside one program; the profiler
(`frugal.scripts.systems.gnn.stage_profile`) jits each step on its own, so the stage times it
reports are the times of exactly the code the layer runs.

Semantics follow PyTorch Geometric (checked against PyG 2.8.1 outputs in tests):
- `GCNLayer` = GCNConv: D^-1/2 (A) D^-1/2 X W + b on a graph that already has self loops
  (`graph.with_self_loops()`, as GCNConv adds them); the normalization is applied per vertex
  on both sides, as DGL's GraphConv(norm="both") does, so there is no per-edge ApplyEdge.
- `GATLayer` = GATConv (concat or mean over heads, LeakyReLU 0.2, softmax over in-edges).
- `SAGELayer` = SAGEConv: lin_l(aggregate(x_j)) + lin_r(x_i), mean or LSTM aggregator.
- `GINLayer` = GINConv: mlp((1 + eps) x_i + sum x_j).
- `GGNNLayer` = GatedGraphConv (per-step edge linear, sum, GRU), with the edge linear applied per
  edge as in DGL (the paper's "MLP in ApplyEdge, GRU in ApplyVertex").
- `RGCNLayer` = RGCNConv: x W_root + b + sum_r mean_{j in N_r(i)} x_j W_r, optional basis
  decomposition W_r = sum_b a_rb V_b.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from frugal.models.gnn import (
    STAGES,
    Graph,
    check_node_features,
    gather_mean,
    gather_sum,
    scatter_from_receivers,
    scatter_from_senders,
    segment_softmax,
    spmm,
    spmm_per_channel,
    spmm_stacked,
)
from frugal.transforms.initializers import Linear, glorot_uniform

__all__ = [
    "Step",
    "StagedLayer",
    "GCNLayer",
    "GATLayer",
    "SAGELayer",
    "GINLayer",
    "GGNNLayer",
    "RGCNLayer",
    "GNNClassifier",
    "GNN_KINDS",
    "supports_fused_gather",
    "needs_self_loops",
    "prepare_graph",
]

State = dict[str, jax.Array]
_glorot = glorot_uniform()


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage of a layer's forward pass: `layer.<method>(graph, state, **kwargs)`."""

    stage: str
    method: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r} must be one of {STAGES}")


class StagedLayer(nnx.Module):
    """Base class: runs `steps(fused)` in order. Subclasses set in_features and fused_gather."""

    in_features: int
    fused_gather: bool = True  # whether a sparse-dense (fused) Gather exists for this aggregator

    def steps(self, fused: bool) -> tuple[Step, ...]:
        raise NotImplementedError

    def run_step(self, step: Step, graph: Graph, state: State) -> State:
        return getattr(self, step.method)(graph, state, **dict(step.kwargs))

    def __call__(self, graph: Graph, x: jax.Array, *, fused: bool = False) -> jax.Array:
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a frugal.models.gnn.Graph (see make_graph), got {type(graph).__name__}")
        check_node_features(graph, x, features=self.in_features)
        if fused and not self.fused_gather:
            raise ValueError(f"{type(self).__name__} has no fused Gather for this aggregator; use fused=False")
        state: State = {"x": x}
        for step in self.steps(fused):
            state = {**state, **self.run_step(step, graph, state)}
        return state["out"]


def _scatter_x(self, graph: Graph, state: State) -> State:
    return {"messages": scatter_from_senders(graph, state["x"])}


def _linear(rngs, fan_in, fan_out, bias=True):
    return Linear(fan_in, fan_out, use_bias=bias, kernel_init=_glorot, rngs=rngs)


class GCNLayer(StagedLayer):
    """Graph convolution (Kipf & Welling), PyG GCNConv semantics; expects self loops in the graph."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.linear = _linear(rngs, in_features, out_features, bias=False)
        self.bias = nnx.Param(jnp.zeros((out_features,)))

    def steps(self, fused):
        gather = Step("Gather", "gather_fused") if fused else Step("Gather", "gather")
        scatter = () if fused else (Step("Scatter", "scatter"),)
        return (Step("ApplyVertex", "transform"), *scatter, gather, Step("ApplyVertex", "update"))

    # The normalization D^-1/2 (A + I) D^-1/2 enters as per-edge weights cached on the graph
    # (Graph.sym_norm), so neither side of the product needs its own scaling pass over the vertices.
    def transform(self, graph, state):
        # X W first: the product is narrower than X, so the sparse part moves fewer bytes.
        return {"h": self.linear(state["x"])}

    def scatter(self, graph, state):
        return {"messages": scatter_from_senders(graph, state["h"])}

    def gather(self, graph, state):
        return {"aggregated": gather_sum(graph, state["messages"] * graph.sym_norm[:, None])}

    def gather_fused(self, graph, state):
        return {"aggregated": spmm(graph, state["h"], graph.sym_norm)}

    def update(self, graph, state):
        return {"out": state["aggregated"] + self.bias[...]}


class GATLayer(StagedLayer):
    """Graph attention (Velickovic et al.), PyG GATConv semantics; expects self loops in the graph."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        rngs: nnx.Rngs,
    ):
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.in_features, self.out_features, self.heads, self.concat = in_features, out_features, heads, concat
        self.negative_slope = negative_slope
        self.linear = _linear(rngs, in_features, heads * out_features, bias=False)
        self.att_src = nnx.Param(_glorot(rngs.params(), (heads, out_features)))
        self.att_dst = nnx.Param(_glorot(rngs.params(), (heads, out_features)))
        self.bias = nnx.Param(jnp.zeros((heads * out_features if concat else out_features,)))

    def steps(self, fused):
        gather = Step("Gather", "gather_fused") if fused else Step("Gather", "gather")
        return (
            Step("ApplyVertex", "transform"),
            Step("Scatter", "scatter", (("fused", fused),)),
            Step("ApplyEdge", "apply_edge"),
            gather,
            Step("ApplyVertex", "update"),
        )

    def transform(self, graph, state):
        h = self.linear(state["x"]).reshape(-1, self.heads, self.out_features)
        return {
            "h": h,
            "score_src": jnp.sum(h * self.att_src[...], -1),
            "score_dst": jnp.sum(h * self.att_dst[...], -1),
        }

    def scatter(self, graph, state, fused):
        out = {
            "edge_src": scatter_from_senders(graph, state["score_src"]),
            "edge_dst": scatter_from_receivers(graph, state["score_dst"]),
        }
        if not fused:  # the fused Gather reads h from the vertices directly
            out["messages"] = scatter_from_senders(graph, state["h"])
        return out

    def apply_edge(self, graph, state):
        return {"scores": jax.nn.leaky_relu(state["edge_src"] + state["edge_dst"], self.negative_slope)}

    def gather(self, graph, state):
        alpha = segment_softmax(graph, state["scores"])
        return {"aggregated": gather_sum(graph, alpha[..., None] * state["messages"])}

    def gather_fused(self, graph, state):
        # Softmax numerator and denominator in one SpMM per head: append a ones column to h.
        scores = state["scores"]
        seg_max = jax.ops.segment_max(scores, graph.receivers, graph.num_nodes, indices_are_sorted=True)
        seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
        weights = jnp.exp(scores - scatter_from_receivers(graph, seg_max))
        h = state["h"]
        extended = jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1)
        summed = spmm_per_channel(graph, extended, weights)
        return {"aggregated": summed[..., :-1] / (summed[..., -1:] + 1e-16)}

    def update(self, graph, state):
        agg = state["aggregated"]
        out = agg.reshape(agg.shape[0], -1) if self.concat else agg.mean(axis=1)
        return {"out": out + self.bias[...]}


class SAGELayer(StagedLayer):
    """GraphSAGE, PyG SAGEConv semantics, with a mean or an LSTM aggregator."""

    def __init__(self, in_features: int, out_features: int, *, aggregator: str = "mean", rngs: nnx.Rngs):
        if aggregator not in ("mean", "lstm"):
            raise ValueError(f"aggregator={aggregator!r} is not known; use 'mean' or 'lstm'")
        self.in_features, self.out_features, self.aggregator = in_features, out_features, aggregator
        self.fused_gather = aggregator == "mean"
        self.lin_l = Linear(in_features, out_features, rngs=rngs)
        self.lin_r = Linear(in_features, out_features, use_bias=False, rngs=rngs)
        if aggregator == "lstm":
            # One matrix for the four gates (torch order i, f, g, o); hidden size = in_features.
            self.lstm_input = Linear(in_features, 4 * in_features, rngs=rngs)
            self.lstm_hidden = Linear(in_features, 4 * in_features, rngs=rngs)

    @property
    def project_first(self) -> bool:
        # mean(x_j) W = mean(x_j W): with a linear aggregator, project before aggregating when
        # that makes the rows the sparse part moves narrower (PyG aggregates first).
        return self.aggregator == "mean" and self.out_features < self.in_features

    def steps(self, fused):
        project = (Step("ApplyVertex", "project"),) if self.project_first else ()
        if fused:
            return (*project, Step("Gather", "gather_fused"), Step("ApplyVertex", "update"))
        gather = "gather_lstm" if self.aggregator == "lstm" else "gather"
        return (*project, Step("Scatter", "scatter"), Step("Gather", gather), Step("ApplyVertex", "update"))

    def _source(self, state):
        return state["h"] if self.project_first else state["x"]

    def project(self, graph, state):
        return {"h": state["x"] @ self.lin_l.kernel[...]}

    def scatter(self, graph, state):
        return {"messages": scatter_from_senders(graph, self._source(state))}

    def gather(self, graph, state):
        return {"aggregated": gather_mean(graph, state["messages"])}

    def gather_fused(self, graph, state):
        total = spmm(graph, self._source(state))
        return {"aggregated": total / jnp.maximum(graph.in_degrees, 1.0)[:, None]}

    def gather_lstm(self, graph, state):
        """Runs an LSTM over each vertex's in-neighbours (CSR order) and keeps its last hidden state.

        Step t reads message indptr[i] + t for every vertex i; vertices with fewer in-edges keep
        their state (DGL's semantics). The loop is max_in_degree long: the sequential GEMMs are
        why the paper finds this Gather orders of magnitude slower than a sum.
        """
        messages, n, f = state["messages"], graph.num_nodes, self.in_features
        starts = graph.indptr[:-1]

        def step(carry, t):
            h, c = carry
            rows = jnp.minimum(starts + t, messages.shape[0] - 1)
            gates = self.lstm_input(jnp.take(messages, rows, axis=0)) + self.lstm_hidden(h)
            i, fg, g, o = jnp.split(gates, 4, axis=-1)
            c_new = jax.nn.sigmoid(fg) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
            live = (t < graph.in_degrees)[:, None]
            return (jnp.where(live, h_new, h), jnp.where(live, c_new, c)), None

        zeros = jnp.zeros((n, f), messages.dtype)
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.arange(max(graph.max_in_degree, 1)))
        return {"aggregated": h}

    def update(self, graph, state):
        if self.project_first:
            return {"out": state["aggregated"] + self.lin_l.bias[...] + self.lin_r(state["x"])}
        return {"out": self.lin_l(state["aggregated"]) + self.lin_r(state["x"])}


class GINLayer(StagedLayer):
    """Graph isomorphism network layer, PyG GINConv(nn=Linear-ReLU-Linear) semantics."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden_features: int | None = None,
        eps: float = 0.0,
        train_eps: bool = False,
        activation=jax.nn.relu,
        rngs: nnx.Rngs,
    ):
        hidden_features = hidden_features or out_features
        self.in_features, self.out_features = in_features, out_features
        self.eps = nnx.Param(jnp.asarray(eps, jnp.float32)) if train_eps else float(eps)
        self.mlp_in = Linear(in_features, hidden_features, rngs=rngs)
        self.mlp_out = Linear(hidden_features, out_features, rngs=rngs)
        self.activation = activation

    def steps(self, fused):
        if fused:
            return (Step("Gather", "gather_fused"), Step("ApplyVertex", "update"))
        return (Step("Scatter", "scatter"), Step("Gather", "gather"), Step("ApplyVertex", "update"))

    scatter = _scatter_x

    def gather(self, graph, state):
        return {"aggregated": gather_sum(graph, state["messages"])}

    def gather_fused(self, graph, state):
        return {"aggregated": spmm(graph, state["x"])}

    def update(self, graph, state):
        eps = self.eps[...] if isinstance(self.eps, nnx.Param) else self.eps
        combined = (1.0 + eps) * state["x"] + state["aggregated"]
        return {"out": self.mlp_out(self.activation(self.mlp_in(combined)))}


class _GRUCell(nnx.Module):
    """torch.nn.GRUCell: r, z gates and a candidate with the reset gate applied to W_hn h + b_hn."""

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        self.input = Linear(in_features, 3 * hidden, rngs=rngs)
        self.hidden = Linear(hidden, 3 * hidden, rngs=rngs)

    def __call__(self, x, h):
        xr, xz, xn = jnp.split(self.input(x), 3, axis=-1)
        hr, hz, hn = jnp.split(self.hidden(h), 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return (1.0 - z) * n + z * h


class GGNNLayer(StagedLayer):
    """Gated graph network (Li et al.), PyG GatedGraphConv semantics: `num_steps` rounds of
    m = sum_j W_t h_j, h = GRU(m, h); inputs narrower than `features` are zero-padded."""

    def __init__(self, in_features: int, features: int, *, num_steps: int = 1, rngs: nnx.Rngs):
        if in_features > features:
            raise ValueError(f"in_features={in_features} must be <= features={features} (inputs are zero-padded)")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.in_features, self.features, self.num_steps = in_features, features, num_steps
        self.weights = nnx.Param(_glorot(rngs.params(), (num_steps, features, features)))
        self.gru = _GRUCell(features, features, rngs=rngs)

    def steps(self, fused):
        out = [Step("ApplyVertex", "pad_input")]
        for t in range(self.num_steps):
            if fused:  # the edge linear commutes with the sum, so it moves to the vertices
                out += [Step("ApplyVertex", "vertex_linear", (("t", t),)), Step("Gather", "gather_fused")]
            else:
                out += [
                    Step("Scatter", "scatter"),
                    Step("ApplyEdge", "edge_linear", (("t", t),)),
                    Step("Gather", "gather"),
                ]
            out.append(Step("ApplyVertex", "update"))
        return tuple(out)

    def pad_input(self, graph, state):
        x = state["x"]
        return {"out": jnp.pad(x, ((0, 0), (0, self.features - x.shape[1])))}

    def scatter(self, graph, state):
        return {"messages": scatter_from_senders(graph, state["out"])}

    def edge_linear(self, graph, state, t):
        return {"messages": state["messages"] @ self.weights[t]}

    def vertex_linear(self, graph, state, t):
        return {"h": state["out"] @ self.weights[t]}

    def gather(self, graph, state):
        return {"aggregated": gather_sum(graph, state["messages"])}

    def gather_fused(self, graph, state):
        return {"aggregated": spmm(graph, state["h"])}

    def update(self, graph, state):
        return {"out": self.gru(state["aggregated"], state["out"])}


class RGCNLayer(StagedLayer):
    """Relational GCN (Schlichtkrull et al.), PyG RGCNConv(aggr="mean") semantics."""

    def __init__(
        self, in_features: int, out_features: int, *, num_relations: int, num_bases: int | None = None, rngs: nnx.Rngs
    ):
        if num_relations < 1:
            raise ValueError(f"num_relations must be >= 1, got {num_relations}")
        if num_bases is not None and num_bases < 1:
            raise ValueError(f"num_bases must be None or >= 1, got {num_bases}")
        self.in_features, self.out_features = in_features, out_features
        self.num_relations, self.num_bases = num_relations, num_bases
        if num_bases is None:
            self.weight = nnx.Param(_glorot(rngs.params(), (num_relations, in_features, out_features)))
        else:
            self.bases = nnx.Param(_glorot(rngs.params(), (num_bases, in_features, out_features)))
            self.coefficients = nnx.Param(_glorot(rngs.params(), (num_relations, num_bases)))
        self.root = nnx.Param(_glorot(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,)))

    def steps(self, fused):
        if fused:
            return (Step("Gather", "gather_fused"), Step("ApplyVertex", "update"))
        return (
            Step("Scatter", "scatter"),
            Step("ApplyEdge", "apply_edge"),
            Step("Gather", "gather"),
            Step("ApplyVertex", "update"),
        )

    def _check_relations(self, graph):
        if graph.num_edge_types > self.num_relations:
            raise ValueError(
                f"graph has num_edge_types={graph.num_edge_types} but the layer was built for "
                f"num_relations={self.num_relations}"
            )

    def _edge_norm(self, graph):
        # PyG's per-relation mean: 1 / |N_r(i)| for the edge's (destination, relation) pair.
        keys = graph.receivers * self.num_relations + graph.edge_types
        counts = jax.ops.segment_sum(jnp.ones_like(keys, jnp.float32), keys, graph.num_nodes * self.num_relations)
        return 1.0 / jnp.maximum(jnp.take(counts, keys, mode="clip"), 1.0)

    scatter = _scatter_x

    def apply_edge(self, graph, state):
        """x_j W_{r(e)} for every edge: the per-edge GEMMs that make RGCN ApplyEdge-bound."""
        self._check_relations(graph)
        x_j = state["messages"]
        if self.num_bases is None:
            return {"messages": jnp.einsum("ef,efo->eo", x_j, jnp.take(self.weight[...], graph.edge_types, axis=0))}
        per_basis = jnp.einsum("ef,bfo->ebo", x_j, self.bases[...])
        coefficients = jnp.take(self.coefficients[...], graph.edge_types, axis=0)
        return {"messages": jnp.einsum("ebo,eb->eo", per_basis, coefficients)}

    def gather(self, graph, state):
        return {"aggregated": gather_sum(graph, state["messages"] * self._edge_norm(graph)[:, None])}

    def gather_fused(self, graph, state):
        """Transforms the vertices once per relation (or basis), then one SpMM over the stack."""
        self._check_relations(graph)
        x, norm = state["x"], self._edge_norm(graph)
        if self.num_bases is None:
            stacked = jnp.einsum("nf,rfo->rno", x, self.weight[...])
            blocks, values = graph.edge_types[:, None], norm[:, None]
        else:
            stacked = jnp.einsum("nf,bfo->bno", x, self.bases[...])
            blocks = jnp.broadcast_to(jnp.arange(self.num_bases), (graph.num_padded_edges, self.num_bases))
            values = jnp.take(self.coefficients[...], graph.edge_types, axis=0) * norm[:, None]
        return {"aggregated": spmm_stacked(graph, stacked, blocks, values)}

    def update(self, graph, state):
        return {"out": state["aggregated"] + state["x"] @ self.root[...] + self.bias[...]}


def supports_fused_gather(layer: StagedLayer) -> bool:
    return bool(layer.fused_gather)


GNN_KINDS = ("gcn", "gat", "sage", "sage_lstm", "gin", "ggnn", "rgcn")


class GNNClassifier(nnx.Module):
    """A node classifier: `num_layers` layers of one kind with activation + dropout in between.

    GCN and GAT expect the graph with self loops (`prepare_graph(kind, graph)` adds them once on
    the host). GGNN wraps its propagation steps between an input and an output linear map.
    """

    def __init__(
        self,
        kind: str,
        in_features: int,
        num_classes: int,
        *,
        hidden: int = 16,
        num_layers: int = 2,
        heads: int = 8,
        dropout: float = 0.5,
        num_relations: int = 1,
        num_bases: int | None = None,
        rngs: nnx.Rngs,
    ):
        if kind not in GNN_KINDS:
            raise ValueError(f"kind={kind!r} is not known; choose one of {GNN_KINDS}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.kind = kind
        self.activation = jax.nn.elu if kind == "gat" else jax.nn.relu
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.input = nnx.data(None)  # GGNN's input/output maps; data so they may hold modules later
        self.output = nnx.data(None)
        widths = [in_features] + [hidden] * (num_layers - 1) + [num_classes]
        layers = []
        if kind == "ggnn":
            self.input = nnx.data(Linear(in_features, hidden, rngs=rngs))
            layers.append(GGNNLayer(hidden, hidden, num_steps=num_layers, rngs=rngs))
            self.output = nnx.data(Linear(hidden, num_classes, rngs=rngs))
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == num_layers - 1
            if kind == "gcn":
                layers.append(GCNLayer(fan_in, fan_out, rngs=rngs))
            elif kind == "gat":
                fan_in = fan_in if i == 0 else hidden * heads
                layers.append(GATLayer(fan_in, fan_out, heads=1 if last else heads, concat=not last, rngs=rngs))
            elif kind in ("sage", "sage_lstm"):
                aggregator = "lstm" if kind == "sage_lstm" else "mean"
                layers.append(SAGELayer(fan_in, fan_out, aggregator=aggregator, rngs=rngs))
            elif kind == "gin":
                layers.append(GINLayer(fan_in, fan_out, rngs=rngs))
            elif kind == "rgcn":
                layers.append(RGCNLayer(fan_in, fan_out, num_relations=num_relations, num_bases=num_bases, rngs=rngs))
        self.layers = nnx.List(layers)

    def __call__(self, graph: Graph, x: jax.Array, *, fused: bool = False) -> jax.Array:
        # Dropout acts on hidden representations only: a Bernoulli mask over the raw (N, F) input
        # (F = 1433 for Cora) cost ~20x the rest of a training step on CPU.
        h = x
        if self.input is not None:
            check_node_features(graph, x)
            h = self.activation(self.input(h))
        for i, layer in enumerate(self.layers):
            h = layer(graph, h if i == 0 and self.input is None else self.dropout(h), fused=fused)
            if i < len(self.layers) - 1 or self.output is not None:
                h = self.activation(h)
        if self.output is not None:
            h = self.output(self.dropout(h))
        return h


def needs_self_loops(kind: str) -> bool:
    """GCN and GAT normalize over N(i) plus i itself, as PyG's GCNConv/GATConv add self loops."""
    return kind in ("gcn", "gat")


def prepare_graph(kind: str, graph: Graph) -> Graph:
    """The graph a model of this kind expects (self loops added once, on the host, for GCN/GAT)."""
    return graph.with_self_loops() if needs_self_loops(kind) else graph
