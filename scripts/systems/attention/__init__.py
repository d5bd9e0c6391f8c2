"""SALO's hybrid sparse attention (DAC'22, arXiv 2206.14550) in JAX: the dense vs banded benchmark,
the Longformer layer against Hugging Face's PyTorch one, and Longformer / ViL trained on built-in
data (`frugal bench attention`)."""
