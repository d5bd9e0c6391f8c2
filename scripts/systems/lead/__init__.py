"""LEAD (Sun et al., WSDM 2024, arXiv 2212.05225): layer-wise score-distribution distillation for dense
retrieval. So far only its data (a retrieval set built from installed packages' documentation) lives
here; the losses are in `frugal.transforms.retrieval_distill`. No command yet (issue 19)."""
