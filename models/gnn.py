"""Graphs with static shapes and the four message-passing stages, as pure JAX functions.

The GNN characterization paper (CAL 2020, after NeuGraph's SAGA-NN) splits every GNN layer into

    Scatter      copy vertex data onto edges (an index gather: `h[senders]`)
    ApplyEdge    a neural network per edge (GEMM/GEMV or element-wise)
    Gather       reduce the edge data into each destination vertex
    ApplyVertex  a neural network per vertex (GEMM, GRU, ...)

Gather comes in two forms here:
- unfused: Scatter materializes an (E, F) message array and Gather reduces it with segment ops
  (`jax.ops.segment_sum/max`), which is what PyG's `propagate` does with an `edge_index`;
- fused: one sparse-dense product `A @ h` (CSR, since the edges are sorted by destination; COO on
  request) that never builds the per-edge messages, like PyG's `SparseTensor` path and DGL's g-SpMM.

`Graph` is a pytree whose index arrays are padded to a fixed edge count, so a jitted layer
compiles once per padded size. Padding edges point at the out-of-range destination `num_nodes`,
which every segment op drops. Structure-only facts (degrees, CSR row pointers, the CSR without
self loops) are computed once on the host in `make_graph`, as PyG's `cached=True` does.

CPU speed notes for the fused Gather: the CSR product is `frugal.jaxlib_ext.csr_matmul` (a native kernel
built on first use, vectorized rows over XLA's threads; jaxlib's CSR kernel when no compiler is
around). Its cost is mostly per nonzero, so a unit-weight product leaves the self loops out of the
sparse matrix and adds them as an element-wise term (GCN's graphs: 18% fewer nonzeros).

The layers themselves live in `frugal.models.gnn_layers`; their names are re-exported here lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from frugal.jaxlib_ext.csr_matmul import csr_matmul

STAGES = ("Scatter", "ApplyEdge", "Gather", "ApplyVertex")


def _static(**kwargs):
    return dataclasses.field(metadata=dict(static=True), **kwargs)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Graph:
    """A directed graph padded to a static edge count; edge e carries senders[e] -> receivers[e].

    Build it with `make_graph` (which validates and sorts); do not fill the fields by hand.
    """

    senders: jax.Array  # (E_pad,) int32 source vertex of each edge
    receivers: jax.Array  # (E_pad,) int32 destination; padding edges hold num_nodes
    edge_types: jax.Array  # (E_pad,) int32 relation id (zeros for untyped graphs)
    in_degrees: jax.Array  # (N,) float32 number of real in-edges per vertex
    # GCN's symmetric normalization per edge, 1 / sqrt(in_degree[receiver] * in_degree[sender]) (0
    # where a degree is 0, and on padding): the weights PyG's gcn_norm caches with cached=True.
    sym_norm: jax.Array  # (E_pad,) float32
    indptr: jax.Array  # (N + 1,) int32 CSR row pointers over receivers (edges are sorted)
    # The same CSR without self loops (A = A_loop_free + diag(self_loop_counts)), so that a unit-
    # weight SpMM handles the loops as one element-wise term instead of N more sparse entries.
    loop_free_senders: jax.Array  # (E_pad,) int32 senders of the non-loop edges in CSR order, then 0
    loop_free_indptr: jax.Array  # (N + 1,) int32 row pointers into loop_free_senders
    self_loop_counts: jax.Array  # (N,) float32 number of i -> i edges per vertex
    num_nodes: int = _static()
    num_edges: int = _static()  # real edges; the rest of the arrays is padding
    num_edge_types: int = _static(default=1)
    max_in_degree: int = _static(default=0)
    num_self_loops: int = _static(default=0)

    @property
    def num_padded_edges(self) -> int:
        return int(self.senders.shape[0])

    @property
    def edge_mask(self) -> jax.Array:
        """True for real edges, False for padding."""
        return jnp.arange(self.num_padded_edges) < self.num_edges

    def edge_index(self) -> np.ndarray:
        """The real edges as a (2, E) numpy array (sources first), sorted by destination."""
        senders = np.asarray(self.senders)[: self.num_edges]
        receivers = np.asarray(self.receivers)[: self.num_edges]
        return np.stack([senders, receivers]).astype(np.int64)

    def with_self_loops(self) -> Graph:
        """A copy with every existing self loop removed and one loop per vertex added (host-side).

        This is what PyG's GCNConv and GATConv do inside the layer (remove + add); doing it once on
        the host keeps the jitted layers free of data-dependent shapes.
        """
        index = self.edge_index()
        types = np.asarray(self.edge_types)[: self.num_edges]
        keep = index[0] != index[1]
        loops = np.arange(self.num_nodes)
        index = np.concatenate([index[:, keep], np.stack([loops, loops])], axis=1)
        types = np.concatenate([types[keep], np.zeros(self.num_nodes, types.dtype)])
        padding = self.num_padded_edges - self.num_edges
        return make_graph(
            index,
            self.num_nodes,
            edge_types=types,
            num_edge_types=self.num_edge_types,
            pad_edges_to=index.shape[1] + padding,
        )


def make_graph(
    edge_index: Any,
    num_nodes: int,
    *,
    edge_types: Any = None,
    num_edge_types: int | None = None,
    pad_edges_to: int | None = None,
) -> Graph:
    """Validates an edge list and returns a `Graph` sorted by destination and padded to a static size.

    Args:
      edge_index: integer array of shape (2, E); row 0 holds sources, row 1 destinations (PyG's
        `source_to_target` convention).
      num_nodes: number of vertices N (> 0); every index must lie in [0, N).
      edge_types: optional (E,) relation ids in [0, num_edge_types) for relational models (RGCN).
      num_edge_types: number of relations (default: max(edge_types) + 1, or 1 when untyped).
      pad_edges_to: pad the edge arrays to this length (>= E) so that graphs of similar size share
        one compiled program; default E (no padding).
    """
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(f"num_nodes must be an int, got {type(num_nodes).__name__}")
    num_nodes = int(num_nodes)
    if num_nodes <= 0:
        raise ValueError(f"num_nodes={num_nodes}: the graph is empty; a graph needs at least one vertex")
    index = np.asarray(edge_index)
    if index.ndim != 2 or index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, num_edges), got {index.shape}")
    if index.size and not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"edge_index must hold integers, got dtype {index.dtype}")
    num_edges = index.shape[1]
    if num_edges == 0:
        raise ValueError(
            "edge_index has no edges: the graph is empty (a GNN over an edgeless graph "
            "is a plain MLP; add edges or self loops)"
        )
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= num_nodes:
        bad = int(np.argmax((index < 0).any(0) | (index >= num_nodes).any(0)))
        raise ValueError(
            f"edge_index holds vertex ids in [{low}, {high}] but num_nodes={num_nodes} allows "
            f"[0, {num_nodes - 1}]; first bad edge is #{bad}: {index[:, bad].tolist()}"
        )
    if edge_types is None:
        types = np.zeros(num_edges, np.int64)
        num_edge_types = 1 if num_edge_types is None else num_edge_types
    else:
        types = np.asarray(edge_types)
        if types.shape != (num_edges,):
            raise ValueError(f"edge_types must have shape ({num_edges},) to match edge_index, got {types.shape}")
        if not np.issubdtype(types.dtype, np.integer):
            raise TypeError(f"edge_types must hold integers, got dtype {types.dtype}")
        if num_edge_types is None:
            num_edge_types = int(types.max()) + 1
        if types.min() < 0 or types.max() >= num_edge_types:
            raise ValueError(f"edge_types must lie in [0, {num_edge_types}), got [{types.min()}, {types.max()}]")
    if int(num_edge_types) < 1:
        raise ValueError(f"num_edge_types must be >= 1, got {num_edge_types}")
    pad_to = num_edges if pad_edges_to is None else int(pad_edges_to)
    if pad_to < num_edges:
        raise ValueError(f"pad_edges_to={pad_to} is smaller than the number of edges {num_edges}")

    order = np.lexsort((index[0], index[1]))  # by destination, then source: CSR order
    senders, receivers, types = index[0][order], index[1][order], types[order]
    degrees = np.bincount(receivers, minlength=num_nodes)
    indptr = np.concatenate([[0], np.cumsum(degrees)])
    pad = pad_to - num_edges
    inv_sqrt = np.where(degrees > 0, 1.0 / np.sqrt(np.maximum(degrees, 1)), 0.0)
    sym_norm = inv_sqrt[receivers] * inv_sqrt[senders]
    is_loop = senders == receivers
    loop_free = senders[~is_loop]
    loop_free_indptr = np.concatenate([[0], np.cumsum(np.bincount(receivers[~is_loop], minlength=num_nodes))])
    return Graph(
        senders=jnp.asarray(np.concatenate([senders, np.zeros(pad, np.int64)]), jnp.int32),
        receivers=jnp.asarray(np.concatenate([receivers, np.full(pad, num_nodes)]), jnp.int32),
        edge_types=jnp.asarray(np.concatenate([types, np.zeros(pad, np.int64)]), jnp.int32),
        in_degrees=jnp.asarray(degrees, jnp.float32),
        sym_norm=jnp.asarray(np.concatenate([sym_norm, np.zeros(pad)]), jnp.float32),
        indptr=jnp.asarray(indptr, jnp.int32),
        # Same length as senders, so the shapes still depend on the padded size only.
        loop_free_senders=jnp.asarray(
            np.concatenate([loop_free, np.zeros(pad_to - loop_free.size, np.int64)]), jnp.int32
        ),
        loop_free_indptr=jnp.asarray(loop_free_indptr, jnp.int32),
        self_loop_counts=jnp.asarray(np.bincount(receivers[is_loop], minlength=num_nodes), jnp.float32),
        num_nodes=num_nodes,
        num_edges=num_edges,
        num_edge_types=int(num_edge_types),
        max_in_degree=int(degrees.max()),
        num_self_loops=int(is_loop.sum()),
    )


def check_node_features(graph: Graph, x: jax.Array, *, name: str = "x", features: int | None = None) -> None:
    """Raises ValueError unless x is (num_nodes, features); shapes are static, so this works under jit."""
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (num_nodes, features) matrix, got shape {x.shape}")
    if x.shape[0] != graph.num_nodes:
        raise ValueError(
            f"{name} has {x.shape[0]} rows but the graph has num_nodes={graph.num_nodes}; "
            "node features and graph must describe the same vertices"
        )
    if features is not None and x.shape[1] != features:
        raise ValueError(f"{name} has {x.shape[1]} features per node but the layer expects {features}")


# --- Scatter: vertex data onto edges (IndexSelection) -------------------------------------------


def scatter_from_senders(graph: Graph, h: jax.Array) -> jax.Array:
    """h[senders]: one row per edge (padding edges read vertex 0 and are dropped later)."""
    return jnp.take(h, graph.senders, axis=0)


def scatter_from_receivers(graph: Graph, h: jax.Array) -> jax.Array:
    """h[receivers]; padding edges (receiver == num_nodes) read the last vertex, harmlessly."""
    return jnp.take(h, graph.receivers, axis=0, mode="clip")


# --- Gather, unfused: segment reductions over materialized edge data ----------------------------


def gather_sum(graph: Graph, messages: jax.Array) -> jax.Array:
    """Sum of the messages arriving at each vertex; padding edges fall outside the segments."""
    return jax.ops.segment_sum(messages, graph.receivers, graph.num_nodes, indices_are_sorted=True)


def gather_mean(graph: Graph, messages: jax.Array) -> jax.Array:
    """Mean over in-edges; vertices without in-edges get zeros (PyG clamps the count at 1)."""
    total = gather_sum(graph, messages)
    count = jnp.maximum(graph.in_degrees, 1.0).reshape((-1,) + (1,) * (messages.ndim - 1))
    return total / count


def gather_max(graph: Graph, messages: jax.Array) -> jax.Array:
    """Max over in-edges; vertices without in-edges get zeros (as PyG)."""
    out = jax.ops.segment_max(messages, graph.receivers, graph.num_nodes, indices_are_sorted=True)
    return jnp.where(jnp.isfinite(out), out, 0.0)


def segment_softmax(graph: Graph, scores: jax.Array) -> jax.Array:
    """Softmax of per-edge scores over each destination's in-edges (PyG `utils.softmax`).

    Subtracts the per-destination max for stability and adds 1e-16 to the denominator, as PyG does.
    Padding edges get weight 0.
    """
    seg_max = jax.ops.segment_max(scores, graph.receivers, graph.num_nodes, indices_are_sorted=True)
    seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
    shifted = jnp.exp(scores - scatter_from_receivers(graph, seg_max))
    mask = graph.edge_mask.reshape((-1,) + (1,) * (scores.ndim - 1))
    shifted = jnp.where(mask, shifted, 0.0)
    denominator = gather_sum(graph, shifted) + 1e-16
    return shifted / scatter_from_receivers(graph, denominator)


# --- Gather, fused: sparse-dense products (SpMM) ------------------------------------------------


def adjacency(graph: Graph, values: jax.Array | None = None, *, layout: str = "bcsr"):
    """The (N, N) sparse matrix A with A[receiver, sender] = value (1 when values is None).

    layout "bcsr" uses the CSR row pointers (edges are sorted by destination); "bcoo" uses
    coordinates. Padding entries get value 0 and lie outside the rows the pointers cover.
    """
    if values is None:
        values = jnp.ones((graph.num_padded_edges,), jnp.float32)
    values = jnp.where(graph.edge_mask, values, 0.0)
    shape = (graph.num_nodes, graph.num_nodes)
    if layout == "bcsr":
        return sparse.BCSR((values, graph.senders, graph.indptr), shape=shape, indices_sorted=True)
    if layout == "bcoo":
        rows = jnp.minimum(graph.receivers, graph.num_nodes - 1)
        coords = jnp.stack([rows, graph.senders], axis=1)
        return sparse.BCOO((values, coords), shape=shape, indices_sorted=True)
    raise ValueError(f"layout={layout!r} is not known; use 'bcsr' or 'bcoo'")


def spmm(graph: Graph, h: jax.Array, values: jax.Array | None = None, *, layout: str = "bcsr") -> jax.Array:
    """Fused Gather: sum over in-edges of value_e * h[sender_e], as one sparse-dense product.

    h is (N, ...) and values (E_pad,) or None (all ones). Extra trailing axes of h are flattened
    into the product's column dimension. Layout "bcsr" runs `frugal.jaxlib_ext.csr_matmul` (the native CPU
    kernel; jaxlib's or cuSPARSE's CSR product elsewhere), "bcoo" jax.experimental.sparse's COO
    product. With unit weights and layout "bcsr", self loops are taken out of the sparse product
    and added as `self_loop_counts * h` (graphs with one loop per vertex: ~18% of the nonzeros).
    """
    flat = h.reshape(h.shape[0], -1)
    if layout == "bcoo":
        out = adjacency(graph, values, layout=layout) @ flat
    elif layout != "bcsr":
        raise ValueError(f"layout={layout!r} is not known; use 'bcsr' or 'bcoo'")
    elif values is None and graph.num_self_loops:
        out = (
            csr_matmul(graph.loop_free_indptr, graph.loop_free_senders, None, flat)
            + graph.self_loop_counts[:, None].astype(flat.dtype) * flat
        )
    else:
        # Padding edges sit past indptr[-1], so the product never reads their values.
        out = csr_matmul(graph.indptr, graph.senders, values, flat)
    return out.reshape((graph.num_nodes,) + h.shape[1:])


def spmm_per_channel(graph: Graph, h: jax.Array, values: jax.Array, *, layout: str = "bcsr") -> jax.Array:
    """Fused Gather with a different edge value per channel group k (GAT heads).

    h is (N, K, C) and values (E_pad, K); returns (N, K, C) with
    out[i, k] = sum over in-edges e of i of values[e, k] * h[sender_e, k]. One SpMM per group.
    """
    if h.ndim != 3 or values.shape != (graph.num_padded_edges, h.shape[1]):
        raise ValueError(f"spmm_per_channel needs h (N, K, C) and values (E_pad, K); got {h.shape}, {values.shape}")
    outs = [spmm(graph, h[:, k], values[:, k], layout=layout) for k in range(h.shape[1])]
    return jnp.stack(outs, axis=1)


def spmm_stacked(graph: Graph, stacked: jax.Array, blocks: jax.Array, values: jax.Array) -> jax.Array:
    """Fused Gather over K stacked copies of the vertex data, summed: one SpMM with J*E nonzeros.

    stacked is (K, N, C) (e.g. x @ W_r for every relation r, or x @ V_b for every basis b); edge
    e contributes values[e, j] * stacked[blocks[e, j], sender_e] to its receiver for each j.
    The matrix is (N, K*N) in CSR order, so relational layers (RGCN) need one product, not K.
    """
    num_blocks, n, c = stacked.shape
    per_edge = blocks.shape[1]
    columns = blocks * n + graph.senders[:, None]
    values = jnp.where(graph.edge_mask[:, None], values, 0.0)
    return csr_matmul(
        graph.indptr * per_edge, columns.reshape(-1), values.reshape(-1), stacked.reshape(num_blocks * n, c)
    )


def __getattr__(name: str):
    # Lazy re-export of the layer classes, so `from frugal.models.gnn import GCNLayer` works without an
    # import cycle (frugal.models.gnn_layers imports this module).
    layers = importlib.import_module("frugal.models.gnn_layers")
    if name in layers.__all__:
        return getattr(layers, name)
    raise AttributeError(f"module 'frugal.models.gnn' has no attribute {name!r}")
