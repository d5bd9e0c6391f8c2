"""`run(AccelConfig) -> figures`: the ANT table, SALO and the design sweep in one call (the tour's
section); each part is also its own command (`run_ant`, `run_salo`, `run_sweep`)."""

from __future__ import annotations

from frugal.scripts.systems.accel.ant_table import run_ant
from frugal.scripts.systems.accel.config import AccelConfig
from frugal.scripts.systems.accel.design_sweep import run_sweep
from frugal.scripts.systems.accel.salo_table import run_salo

__all__ = ["run", "run_ant", "run_salo", "run_sweep"]


def run(config: AccelConfig) -> dict:
    """Figures of all three experiments, keyed `ant`, `salo`, `sweep`."""
    return {"ant": run_ant(config.ant), "salo": run_salo(config.salo), "sweep": run_sweep(config.sweep)}
