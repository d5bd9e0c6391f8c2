"""AQuant (arXiv 2208.11945): learned activation rounding borders on block-reconstruction PTQ, against
round-to-nearest and a QDrop-style baseline (arXiv 2203.05740) on a ResNet (`frugal quant aquant`)."""
