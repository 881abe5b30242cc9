"""mosaik simulator of households: N households as entities, minute profiles and HVAC inside.

Outputs per household (load convention): ``load_kw`` (demand without HVAC),
``pv_kw``, ``wind_kw`` (a small turbine's output), ``hvac_kw``, ``net_kw`` =
load + HVAC − PV − wind (positive = drawn from the grid, before any
battery), ``q_kvar`` (load and HVAC at the household's power factor,
generation at unity), ``t_indoor_c``, ``t_outdoor_c`` and
``bus`` (1-based). With PV inverters that act (``inverter`` given to ``init``), ``pv_kw`` is what the inverter
delivers after curtailment, ``pv_curtailed_kw`` what it held back and ``pv_q_kvar`` its reactive power
(+ = injected), from the time-shifted input ``vm_pu`` of the household's bus (``devices.inverter``); ``q_kvar``
then includes it. HVAC follows the thermal model of Jiang & Wang 2024, eq. (5)
(``devices.thermal``); a thermostat runs it unless the input
``hvac_set_kw`` (from a controller, time-shifted) gives a finite power.
"""

from __future__ import annotations

from collections.abc import Sequence

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.devices.inverter import InverterOutput, InverterSettings, inverter_output
from dercosim.devices.thermal import indoor_temperature_next, thermostat
from dercosim.sims.entities import hand_out
from dercosim.sims.pacing import paced
from dercosim.sims.tables import entity_data, positions, tabled

ATTRS = ["load_kw", "pv_kw", "wind_kw", "hvac_kw", "net_kw", "q_kvar", "t_indoor_c", "t_outdoor_c", "bus",
         "hvac_set_kw", "vm_pu", "pv_curtailed_kw", "pv_q_kvar", "p_curtail_kw", "q_set_kvar"]
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Household": {"public": True, "params": [], "attrs": ATTRS}},
}


@tabled
@paced
class HouseholdSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.n_created = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, names: Sequence[str] = (),
             bus: Sequence[int] = (), load_kw: Any = None, pv_kw: Any = None, power_factor: Sequence[float] = (),
             t_outdoor_c: Any = None, hvac: dict[str, list[float]] | None = None, wind_kw: Any = None,
             inverter: dict[str, Any] | None = None) -> Meta:
        """``load_kw``, ``pv_kw``, ``wind_kw``: (n_steps, n), one row per step from t = 0 (``wind_kw`` None:
        no turbines); ``t_outdoor_c``: (n_steps,).

        ``hvac``: per-household lists ``p_max_kw`` (0 = no HVAC), ``c_kwh_per_c``,
        ``r_c_per_kw``, ``mu`` (+COP cooling, −COP heating), ``t_set_c``,
        ``band_c``, ``t_init_c``.

        ``inverter``: the PV inverters' settings (:class:`dercosim.devices.inverter.InverterSettings` fields) and
        ``s_rated_kva`` per household; None: PV at unity power factor, never curtailed.
        """
        self.step_s = int(step_s)
        self.names = list(names)
        n = len(self.names)
        self.index = {name: j for j, name in enumerate(self.names)}
        self.bus = np.asarray(bus, int)
        self.load_kw = np.asarray(load_kw, float).reshape(-1, n)
        self.pv_kw = np.asarray(pv_kw, float).reshape(-1, n)
        # no turbines: one row of zeros for every step (not a whole run's array of them: 0.7 GB for 2,000 homes
        # over a month)
        self.wind_kw = None if wind_kw is None else np.asarray(wind_kw, float).reshape(-1, n)
        self.no_wind_kw = np.zeros(n)
        self.tan_phi = np.tan(np.arccos(np.asarray(power_factor, float)))
        n_steps = len(self.load_kw)
        self.t_out = np.full(n_steps, 20.0) if t_outdoor_c is None else np.asarray(t_outdoor_c, float)
        hvac = hvac or {}
        self.hvac_p_max = np.asarray(hvac.get("p_max_kw", np.zeros(n)), float)
        self.has_hvac = self.hvac_p_max > 0
        one = np.ones(n)
        self.hvac_c = np.asarray(hvac.get("c_kwh_per_c", one), float)
        self.hvac_r = np.asarray(hvac.get("r_c_per_kw", one), float)
        self.hvac_mu = np.asarray(hvac.get("mu", one), float)
        self.t_set = np.asarray(hvac.get("t_set_c", one * 22.0), float)
        self.band = np.asarray(hvac.get("band_c", one * 2.0), float)
        self.t_in = np.asarray(hvac.get("t_init_c", self.t_set), float).copy()
        self.hvac_on = np.zeros(n, bool)
        self.hvac_kw = np.zeros(n)
        self.k = 0
        self.inverter = None
        if inverter is not None:
            settings: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in inverter.items()
                                        if k != "s_rated_kva"}
            self.inverter = InverterSettings(**settings)
            self.s_rated = np.asarray(inverter["s_rated_kva"], float)
            self.pv_now, self.pv_q, self.pv_cut = np.zeros(n), np.zeros(n), np.zeros(n)
            self.last_out: InverterOutput | None = None
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        """Hands out the next ``num`` households of the table given to ``init``."""
        entities, self.n_created = hand_out(self.names, self.n_created, num, model, "households")
        return entities

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.k = time // self.step_s
        if self.k >= len(self.load_kw):
            raise ValueError(f"household profiles end at step {len(self.load_kw)}, asked for step {self.k}")
        if np.any(self.has_hvac):
            self.hvac_on = thermostat(self.t_in, self.hvac_on, self.hvac_mu, self.t_set, self.band)
            power = np.where(self.hvac_on, self.hvac_p_max, 0.0)
            for eid, attrs in inputs.items():
                values = attrs.get("hvac_set_kw", {})
                if values:
                    setpoint = float(sum(values.values()))
                    j = self.index[eid]
                    if np.isfinite(setpoint):
                        power[j] = min(max(setpoint, 0.0), self.hvac_p_max[j])
            self.hvac_kw = np.where(self.has_hvac, power, 0.0)
            t_next = indoor_temperature_next(self.t_in, self.t_out[self.k], self.hvac_kw, self.hvac_mu,
                                             self.hvac_c, self.hvac_r, self.step_s / 3600.0)
            self.t_in = np.where(self.has_hvac, t_next, self.t_in)
        if self.inverter is not None:
            n = len(self.names)
            v_prev = np.ones(n)  # nominal until a power flow has answered (t = 0)
            cap, q_set = np.full(n, np.nan), np.full(n, np.nan)  # a controller's setpoints (NaN: none)
            for eid, attrs in inputs.items():
                j = self.index[eid]
                for attr, target in (("vm_pu", v_prev), ("p_curtail_kw", cap), ("q_set_kvar", q_set)):
                    values = attrs.get(attr, {})
                    if values:
                        target[j] = float(next(iter(values.values())))  # vm_pu NaN after a failed solve
            out = inverter_output(self.pv_kw[self.k], self.s_rated, v_prev, self.inverter, p_cap_kw=cap,
                                  q_set_kvar=q_set, last=self.last_out)
            self.pv_now, self.pv_q, self.pv_cut = out.p_kw, out.q_kvar, out.curtailed_kw
            self.last_out = out
        return time + self.step_s

    def _vector(self, attr: str) -> np.ndarray | None:
        """``attr`` of every household this step, in ``self.names`` order (None: not an output)."""
        k = self.k
        inv = self.inverter is not None
        if attr == "pv_kw" and inv:
            return self.pv_now
        wind = self.no_wind_kw if self.wind_kw is None else self.wind_kw[k]
        if attr in ("load_kw", "pv_kw"):
            return getattr(self, attr)[k]
        if attr == "wind_kw":
            return wind
        if attr == "hvac_kw":
            return self.hvac_kw
        if attr == "net_kw":
            return self.load_kw[k] + self.hvac_kw - (self.pv_now if inv else self.pv_kw[k]) - wind
        if attr == "q_kvar":
            q = (self.load_kw[k] + self.hvac_kw) * self.tan_phi
            return q - self.pv_q if inv else q
        if attr == "pv_curtailed_kw":
            return self.pv_cut if inv else np.zeros(len(self.names))
        if attr == "pv_q_kvar":
            return self.pv_q if inv else np.zeros(len(self.names))
        if attr == "t_indoor_c":
            return np.where(self.has_hvac, self.t_in, np.nan)
        if attr == "t_outdoor_c":
            return np.full(len(self.names), float(self.t_out[k]))
        if attr == "bus":
            return self.bus
        return None

    def column(self, attr: str, eids: list[str]) -> list[float] | None:
        """``attr`` of the households ``eids`` as a list (a simulator's Table, sims/tables.py)."""
        values = self._vector(attr)
        return None if values is None else values[positions(self, eids)].tolist()

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return entity_data(self, outputs)
