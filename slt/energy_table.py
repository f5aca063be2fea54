"""The constants of the memory-aware energy estimate (slt.energy), as data: the cited defaults and a reader
for a YAML file that replaces some of them (the run field `energy_table`). Loads neither torch nor numpy."""

import math
from pathlib import Path

import yaml

# After Lemaire et al., "An analytical estimation of spiking neural networks energy efficiency" (ICONIP 2022,
# arXiv 2210.13107): operations and memory accesses per layer, each access costing the SRAM energy of the
# memory it touches.
MEMORY_AWARE_TABLE = {
    "add_pj": 0.1,  # 32-bit integer add, 45 nm (Horowitz, ISSCC 2014), the setting of Lemaire et al.
    "mul_pj": 3.1,  # 32-bit integer multiply, 45 nm (Horowitz 2014)
    # one SRAM access, in pJ, as a line in the memory's size in bits through Horowitz's 64-bit reads of
    # 8 KB (10 pJ), 32 KB (20 pJ) and 1 MB (100 pJ), as Lemaire et al.'s group fits them
    "sram_pj_per_bit": 1.09e-5,
    "sram_pj_base": 13.2,
    "weight_bits": 32,
    "potential_bits": 32,  # membrane potentials
    "activation_bits": 32,  # an ANN layer's inputs and outputs (and a spiking layer's real-valued ones)
    "spike_bits": 1,
}


def load_energy_table(path: str | None) -> dict:
    """MEMORY_AWARE_TABLE with the values of the YAML mapping in `path` (None: the defaults). Raises
    ValueError("energy_table: ...") naming what is wrong."""
    if path is None:
        return dict(MEMORY_AWARE_TABLE)
    file = Path(path).expanduser()
    try:
        given = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"energy_table: cannot read {file} as YAML ({type(err).__name__})") from None
    if not isinstance(given, dict):
        raise ValueError(f"energy_table: {file} must hold a mapping; keys: {', '.join(MEMORY_AWARE_TABLE)}")
    for key, value in given.items():
        if key not in MEMORY_AWARE_TABLE:
            raise ValueError(f"energy_table: unknown key {key!r} in {file}; allowed: {', '.join(MEMORY_AWARE_TABLE)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"energy_table: {key} = {value!r} in {file}; allowed: a finite number >= 0")
    return {**MEMORY_AWARE_TABLE, **given}
