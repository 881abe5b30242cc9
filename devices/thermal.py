"""Building thermal model of Jiang & Wang 2024, eq. (5), and a hysteresis thermostat.

    T_in[t] = T_in[t-1] − (Δt / (C·R)) · (T_in[t-1] − T_out[t] + μ·R·p_hvac[t])

with C the thermal capacitance (kWh/°C), R the thermal resistance (°C/kW),
Δt the step (h) and μ the mode: +COP for cooling, −COP for heating (p_hvac is
electric power, kW). With Δt = 1 h this is the paper's form. Constant inputs
give the closed form T_in[n] = T_ss + (T_in[0] − T_ss)(1 − Δt/(C·R))^n with
T_ss = T_out − μ·R·p_hvac.

References
----------
- Jiang & Wang 2024: C. Jiang and H. Wang, "Network-Aware Value Stacking of Community Battery via Asynchronous
    Distributed Optimization," 2024. (eq. (5), the building thermal model)
"""

from __future__ import annotations

import numpy as np


def indoor_temperature_next(t_in_c: np.ndarray, t_out_c: np.ndarray | float, p_hvac_kw: np.ndarray,
                            mu: np.ndarray, c_kwh_per_c: np.ndarray, r_c_per_kw: np.ndarray,
                            dt_h: float) -> np.ndarray:
    """One step of eq. (5); all arrays per building."""
    a = dt_h / (c_kwh_per_c * r_c_per_kw)
    if np.any(a >= 1.0):
        raise ValueError("step too long for the thermal model: dt/(C·R) must be < 1")
    return t_in_c - a * (t_in_c - t_out_c + mu * r_c_per_kw * p_hvac_kw)


def thermostat(t_in_c: np.ndarray, was_on: np.ndarray, mu: np.ndarray, t_set_c: np.ndarray,
               band_c: np.ndarray) -> np.ndarray:
    """Hysteresis thermostat: on/off per building.

    Cooling (μ > 0) switches on above ``t_set + band/2`` and off below
    ``t_set − band/2``; heating (μ < 0) the other way round.
    """
    cooling = mu > 0
    too_warm = t_in_c > t_set_c + band_c / 2
    cool_enough = t_in_c < t_set_c - band_c / 2
    too_cold = t_in_c < t_set_c - band_c / 2
    warm_enough = t_in_c > t_set_c + band_c / 2
    on_cool = np.where(was_on, ~cool_enough, too_warm)
    on_heat = np.where(was_on, ~warm_enough, too_cold)
    return np.where(cooling, on_cool, on_heat)
