"""The ANT and SALO accelerators through the JAX-traced cost model (`frugal.accel`): the ANT
speedup/energy table, SALO's cycles and fixed-point mode, and design-space sweeps."""
