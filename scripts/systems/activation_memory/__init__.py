"""Nested forward-AD activations (ICCD'22): activation memory of autodiff, nested forward-AD,
recompute, a low-precision derivative and `auto`, measured on four models in three regimes."""
