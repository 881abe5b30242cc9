"""The controller plug-in protocol (DESIGN.md) and the names a controller may read and write.

A controller is a plain class::

    class MyController:
        period_s = 60                         # step() is called every period_s seconds
        inputs = ("load_kw", "pv_kw", "soc_frac")
        outputs = ("p_set_kw",)
        def __init__(self, **params): ...     # the scenario's [hems.params] table
        def step(self, t, obs): return {"p_set_kw": ...}

``sims/controller.py`` hosts one instance per household (or battery) and
calls ``step(t, obs)`` every ``period_s`` seconds with ``t`` in seconds since
the start and ``obs`` a mapping of the requested inputs. Feedback from the
battery and the grid (``soc_*``, ``vm_pu``, ``battery_p_kw``) is the value of
the previous step (time-shifted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

#: Observations a controller can ask for, and what they are.
OBSERVATIONS: dict[str, str] = {
    "load_kw": "household demand without HVAC this minute, kW",
    "pv_kw": "household PV output this minute, kW",
    "hvac_kw": "HVAC electric power this minute, kW",
    "net_kw": "household net demand before the battery (load + HVAC − PV), kW",
    "t_indoor_c": "indoor temperature, °C",
    "t_outdoor_c": "outdoor temperature, °C",
    "soc_kwh": "battery stored energy at the end of the previous step, kWh",
    "soc_frac": "battery state of charge at the end of the previous step, 0..1",
    "battery_p_kw": "battery mean power in the previous step, kW (+ = charging)",
    "meter_kw": "the household's metered power in the previous step (net demand after the battery, what it is "
                "billed for), kW (+ = import)",
    "capacity_kwh": "battery capacity, kWh",
    "p_charge_max_kw": "battery charge power limit, kW",
    "p_discharge_max_kw": "battery discharge power limit, kW",
    "soc_min_frac": "battery lower SoC bound, 0..1",
    "soc_max_frac": "battery upper SoC bound, 0..1",
    "vm_pu": "voltage magnitude at the household's bus in the previous step, pu",
    "re_kwh": "RE^{t,k}: the household's share of the fleet's remaining export commitment in this market "
              "interval, minus its net export since the contract's last reply, kWh (< 0: import)",
    "s_mode": "S^t of the interval from the aggregator: 0 = the battery follows the residual, 1 = otherwise",
    "soc_target_frac": "SoC^{t,A}: the aggregator's virtual SoC target at the end of the interval, 0..1",
}

#: Setpoints a controller can write.
SETPOINTS: dict[str, str] = {
    "p_set_kw": "battery power setpoint, kW (+ = charging); held by the PMS unless following the residual",
    "follow_residual": "1 = the PMS follows the actual residual demand every cycle, 0 = hold p_set_kw",
    "hvac_set_kw": "HVAC electric power, kW (overrides the thermostat; clipped to [0, hvac_p_max_kw])",
    "p_curtail_kw": "cap on the PV inverter's active power, kW (NaN = none; applied the next step)",
    "q_set_kvar": "PV inverter reactive power, kvar (+ = injected; within its rating; NaN = its [inverters] mode "
                  "decides; applied the next step)",
}

#: inverter setpoints: a controller writes them for a household with PV
INVERTER_SETPOINTS = ("p_curtail_kw", "q_set_kvar")


#: what every household provides, what one with HVAC and one with a battery add
HOUSEHOLD_INPUTS = ("load_kw", "pv_kw", "net_kw", "t_outdoor_c", "vm_pu")
HVAC_INPUTS = ("hvac_kw", "t_indoor_c")
BATTERY_INPUTS = ("soc_kwh", "soc_frac", "battery_p_kw", "meter_kw", "capacity_kwh", "p_charge_max_kw",
                  "p_discharge_max_kw",
                  "soc_min_frac", "soc_max_frac")


CONTRACT_INPUTS = ("re_kwh", "s_mode", "soc_target_frac")


def household_io(has_battery: bool, has_hvac: bool, has_contract: bool = False,
                 has_pv: bool = False) -> tuple[list[str], list[str]]:
    """(observations available, setpoints writable) for a household with or without a battery, HVAC, a
    smart-contract membership and PV (whose inverter takes a curtailment cap and a reactive-power setpoint)."""
    available = list(HOUSEHOLD_INPUTS)
    if has_contract:
        available += CONTRACT_INPUTS
    writable: list[str] = []
    if has_hvac:
        available += HVAC_INPUTS
        writable.append("hvac_set_kw")
    if has_battery:
        available += BATTERY_INPUTS
        writable += ["p_set_kw", "follow_residual"]
    if has_pv:
        writable += list(INVERTER_SETPOINTS)
    return available, writable


@runtime_checkable
class Controller(Protocol):
    period_s: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]: ...


class BaseController:
    """Optional base class: keeps the constructor parameters and checks the protocol attributes."""

    period_s: int = 60
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def __init__(self, **params: object) -> None:
        unknown = set(params) - set(self.parameters())
        if unknown:
            raise TypeError(f"unknown parameter(s) {sorted(unknown)}; expected {sorted(self.parameters())}")
        for name, default in self.parameters().items():
            setattr(self, name, params.get(name, default))

    @classmethod
    def parameters(cls) -> dict[str, object]:
        """Parameter names and defaults accepted by the constructor (override)."""
        return {}

    def step(self, t: int, obs: Mapping[str, float]) -> Mapping[str, float]:  # pragma: no cover
        raise NotImplementedError


def whole_number(value: Any) -> Any:
    """A float that is a whole number as an int (``period_s = 60.0`` means 60 s); anything else as it is, for the
    parameter's own type to check. Use as ``Annotated[int, BeforeValidator(whole_number), ...]``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
