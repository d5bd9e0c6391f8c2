"""GNN workload characterization (Zhang et al., "Architectural implications of graph neural
networks", IEEE CAL 2020, arXiv 2009.00804): a per-stage profile of GCN, GAT, GGNN, RGCN,
GraphSAGE and GIN layers, fused vs unfused Gather, node classification, and 2-layer inference
beside PyTorch Geometric (github.com/pyg-team/pytorch_geometric)."""
