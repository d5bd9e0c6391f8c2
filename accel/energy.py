"""Per-action energy and area tables (the Accelergy "ERT" idea) for the cost model.

All numbers are public synthesis or CACTI figures; each constant names its source. The ANT
simulator mixes technology nodes (45 nm BitFusion PEs, 28 nm CACTI SRAM) and so do we, on
purpose, because reproducing its normalized results needs its exact tables; the node of each
entry is stated.

Units: picojoules per cycle (PE), picojoules per bit (SRAM, DRAM), nanojoules per cycle (static),
square micrometres (PE area), square millimetres per KiB (SRAM area).
"""

from __future__ import annotations

import dataclasses

# BitFusion / ANT PE rows: (dynamic pJ/cycle, leakage pJ/cycle, area um^2) per PE at 500 MHz, 45 nm.
# hsharma35/bitfusion results/systolic_array_synth.csv; the ANT simulator's "8/4" row is the
# BitFusion fusion unit (8-bit max, 2-bit bricks) and its "6/6" row is used for BiScaled.
PE_TABLE_45NM = {
    "fusion_8_4": (0.560, 0.129, 1733.0),  # ANT, BitFusion, OLAccel, AdaFloat in the ANT simulator
    "fixed_6_6": (0.248, 0.057, 688.0 * (6 * 6) / (8 * 8)),  # BiScaled; area scaled from 8x8 (multiplier ~ bits^2)
    "fixed_8_8": (0.298, 0.046, 688.0),
    "fixed_4_4": (0.120, 0.0, 282.0),
    "fixed_2_2": (0.0575, 0.0, 125.0),
    "fixed_16_16": (0.947, 0.0, 2203.0),
}

# CACTI at 28 nm as swept by the ANT simulator (bitfusion/sram/cacti_sweep.csv): per-bit energies of
# a 512-bit-wide 4 KiB bank (weights: 128 KiB / 32 banks), a 512-bit 8 KiB bank (activations:
# 256 KiB / 32 banks) and a 32-bit 128 B bank (outputs: 128 KiB / 1024 banks).
SRAM_28NM = {
    "wbuf_read": 0.0168924e3 / 512,
    "wbuf_write": 0.0203422e3 / 512,
    "ibuf_read": 0.0177688e3 / 512,
    "ibuf_write": 0.0248866e3 / 512,
    "obuf_read": 0.000294945e3 / 32,
    "obuf_write": 0.000415925e3 / 32,
}
# Area of those banks per KiB of capacity (same CSV: 0.04607 mm^2 per 4 KiB bank, 0.05558 per
# 8 KiB bank, 0.001026 per 128 B bank).
SRAM_AREA_MM2_PER_KIB_28NM = {"wbuf": 0.04606650594 / 4, "ibuf": 0.05558371808 / 8, "obuf": 0.00102562673 / 0.125}

# DRAM energy and the per-cycle static energy charged by the ANT simulator
# (ant_simulator/bitfusion/src/simulator/stats.py, get_energy_breakdown).
DRAM_READ_PJ_PER_BIT = 0.644304e3 / 1024
DRAM_WRITE_PJ_PER_BIT = 0.784104e3 / 1024
STATIC_NJ_PER_CYCLE_500MHZ = 484.615 / 500

# DRAM pJ/bit by technology (Accelergy CACTI plug-in cacti_wrapper.py), for sweeps.
DRAM_PJ_PER_BIT = {"LPDDR4": 8.0, "LPDDR": 40.0, "DDR3": 70.0, "GDDR5": 14.0, "HBM2": 3.9}

# Type-aware PE energy: relative dynamic energy of a PE by the decoder in front of its multiplier.
# The ANT simulator charges every type the same (its README says so), which is the default here
# ("reference"). "estimated" is our own documented assumption for studies, not a paper number:
# flint needs a leading-one detector + shifter (+6%), PoT replaces the multiplier by a shifter
# (-30%), float adds exponent add/align logic (+12%, in line with AdaptivFloat's 0.9x energy vs an
# int PE of the same width reported the other way round for its own, larger, datapath).
TYPE_ENERGY_FACTORS = {
    "reference": {"int": 1.0, "flint": 1.0, "pot": 1.0, "float": 1.0},
    "estimated": {"int": 1.0, "flint": 1.06, "pot": 0.70, "float": 1.12},
}

# Output partial sums are kept at 16 bits in SRAM (ANT simulator `oprec = 16`).
OUTPUT_BITS = 16


@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Per-action energies a design is charged with (all floats; see the module constants)."""

    pe_dynamic_pj: float
    pe_leak_pj: float
    pe_area_um2: float
    wbuf_read_pj_bit: float = SRAM_28NM["wbuf_read"]
    wbuf_write_pj_bit: float = SRAM_28NM["wbuf_write"]
    ibuf_read_pj_bit: float = SRAM_28NM["ibuf_read"]
    ibuf_write_pj_bit: float = SRAM_28NM["ibuf_write"]
    obuf_read_pj_bit: float = SRAM_28NM["obuf_read"]
    obuf_write_pj_bit: float = SRAM_28NM["obuf_write"]
    dram_read_pj_bit: float = DRAM_READ_PJ_PER_BIT
    dram_write_pj_bit: float = DRAM_WRITE_PJ_PER_BIT
    static_nj_cycle: float = STATIC_NJ_PER_CYCLE_500MHZ

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"EnergyTable.{field.name}={value!r} must be a non-negative number")


def pe_energy_table(row: str, *, numeric_type: str = "int", type_factors: str = "reference") -> EnergyTable:
    """An EnergyTable for a PE row of PE_TABLE_45NM, optionally scaled for the PE's numeric type."""
    if row not in PE_TABLE_45NM:
        raise ValueError(f"row={row!r}: use one of {sorted(PE_TABLE_45NM)}")
    if type_factors not in TYPE_ENERGY_FACTORS:
        raise ValueError(f"type_factors={type_factors!r}: use one of {sorted(TYPE_ENERGY_FACTORS)}")
    factors = TYPE_ENERGY_FACTORS[type_factors]
    if numeric_type not in factors:
        raise ValueError(f"numeric_type={numeric_type!r}: use one of {sorted(factors)}")
    dyn, leak, area = PE_TABLE_45NM[row]
    return EnergyTable(pe_dynamic_pj=dyn * factors[numeric_type], pe_leak_pj=leak, pe_area_um2=area)
