"""LEAD (Sun et al., WSDM 2024, arXiv 2212.05225): layer-wise score-distribution distillation for dense
retrieval. So far only its data (`corpus`: a retrieval set built from installed packages'
documentation) and its evaluation (`metrics`: exact search, MRR/nDCG/Recall) live here; the losses are
in `frugal.transforms.retrieval_distill`. No teacher, student or command yet (issue 19)."""
