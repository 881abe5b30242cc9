"""PV inverters that act on the grid: curtailment and reactive power, vectorised over a fleet.

Each step, from the PV's available power and the bus voltage of the previous power flow, an inverter delivers

- active power: the available power, capped by a curtailment setpoint (a controller's ``p_curtail_kw`` cap) and,
  in the Volt-Watt modes, by the Volt-Watt curve;
- reactive power: a setpoint (``q_set_kvar``), a fixed power factor, or the Volt-VAr curve;

within its apparent-power rating, active power first (``|q| <= sqrt(S² − p²)``). With one power flow per step
and the voltage of the previous one, a curve followed at once can overshoot (the next voltage answers the
reactive power just set, and on a stiff feeder swings past the curve's other side). Each step therefore closes
only ``delta_factor`` of the gap between the last output and the curve's (OpenDSS's ``DeltaQ_factor``; a
setpoint or fixed power factor is applied at once). Reactive power is in the
generator convention here (+ = injected, raising the voltage); the household turns it into its load-convention
``q_kvar``. A voltage that is not a number (the previous power flow failed) gives the safe fallback: no Volt-VAr
or Volt-Watt action that step.

References
----------
- IEEE Std 1547-2018, "IEEE Standard for Interconnection and Interoperability of Distributed Energy Resources
    with Associated Electric Power Systems Interfaces," 2018: the Volt-VAr function (5.3.3; Category B default
    curve V1..V4 = 0.92, 0.98, 1.02, 1.08 pu, Q = +0.44, 0, 0, −0.44 of the rating) and the Volt-Watt function
    (5.4.2; default V1 = 1.06 pu at full power, V2 = 1.10 pu at 0.2 of the rating).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: IEEE 1547-2018 Category B defaults
VOLT_VAR_V_PU = (0.92, 0.98, 1.02, 1.08)
VOLT_VAR_Q_FRAC = (0.44, 0.0, 0.0, -0.44)
VOLT_WATT_V_PU = (1.06, 1.10)
VOLT_WATT_P_FRAC = (1.0, 0.2)

MODES = ("unity", "fixed_pf", "volt_var", "volt_watt", "volt_var_watt")


@dataclass(frozen=True)
class InverterSettings:
    """How a fleet's PV inverters act (one setting for all; ratings per inverter)."""

    mode: str = "unity"  #: one of :data:`MODES`
    pf: float = 1.0  #: fixed_pf: the power factor
    pf_absorbing: bool = True  #: fixed_pf: absorb reactive power (lower the voltage) rather than inject it
    volt_var_v_pu: tuple[float, ...] = VOLT_VAR_V_PU
    volt_var_q_frac: tuple[float, ...] = VOLT_VAR_Q_FRAC  #: of the rating, + = injected
    volt_watt_v_pu: tuple[float, ...] = VOLT_WATT_V_PU
    volt_watt_p_frac: tuple[float, ...] = VOLT_WATT_P_FRAC  #: of the rating
    delta_factor: float = 0.3  #: share of the gap to the curve closed per step (1 = at once)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"inverter mode must be one of {MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class InverterOutput:
    p_kw: np.ndarray  #: active power delivered, kW
    q_kvar: np.ndarray  #: reactive power, kvar, + = injected (generator convention)
    curtailed_kw: np.ndarray  #: available minus delivered, kW


def inverter_output(p_available_kw: np.ndarray, s_rated_kva: np.ndarray, v_prev_pu: np.ndarray,
                    settings: InverterSettings, p_cap_kw: np.ndarray | None = None,
                    q_set_kvar: np.ndarray | None = None, last: InverterOutput | None = None) -> InverterOutput:
    """What each inverter delivers this step (see the module doc). ``p_cap_kw``, ``q_set_kvar``: a controller's
    setpoints per inverter, NaN where it set none (then the mode decides); ``last``: the previous step's output
    (the curves move ``settings.delta_factor`` of the way from it)."""
    a = settings.delta_factor
    p_avail = np.maximum(np.asarray(p_available_kw, float), 0.0)
    s = np.asarray(s_rated_kva, float)
    v = np.asarray(v_prev_pu, float)
    known = np.isfinite(v)
    p = np.minimum(p_avail, s)
    if settings.mode in ("volt_watt", "volt_var_watt"):
        cap = np.interp(np.where(known, v, 0.0), settings.volt_watt_v_pu, settings.volt_watt_p_frac) * s
        if last is not None:  # the cap moves part of the way from the last step's delivered power
            cap = np.maximum(last.p_kw + a * (cap - last.p_kw), cap)
        p = np.where(known, np.minimum(p, cap), p)
    if p_cap_kw is not None:
        cap = np.asarray(p_cap_kw, float)
        p = np.where(np.isfinite(cap), np.minimum(p, np.maximum(cap, 0.0)), p)
    q_room = np.sqrt(np.maximum(s * s - p * p, 0.0))
    if settings.mode in ("volt_var", "volt_var_watt"):
        q = np.where(known, np.interp(np.where(known, v, 1.0), settings.volt_var_v_pu, settings.volt_var_q_frac) * s,
                     0.0)
        if last is not None:
            q = last.q_kvar + a * (q - last.q_kvar)
    elif settings.mode == "fixed_pf" and settings.pf < 1.0:
        q = p * np.tan(np.arccos(settings.pf)) * (-1.0 if settings.pf_absorbing else 1.0)
    else:
        q = np.zeros_like(p)
    if q_set_kvar is not None:
        qs = np.asarray(q_set_kvar, float)
        q = np.where(np.isfinite(qs), qs, q)
    q = np.clip(q, -q_room, q_room)
    return InverterOutput(p_kw=p, q_kvar=q, curtailed_kw=p_avail - p)
