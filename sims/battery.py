"""mosaik simulator of a battery fleet (household and community batteries) with its PMS loop.

One entity per battery. Inputs: ``residual_kw`` (the household's net demand
before the battery, summed if several; none for a battery on a bus),
``p_set_kw`` and ``follow_residual`` from a controller (absent or NaN: the
battery's default mode). Inside each step the PMS of ``devices.battery`` runs
``step_s / pms_cycle_s`` cycles on the residual plus an optional seeded
sub-minute fluctuation. Outputs: ``p_kw`` (mean, + = charging), ``soc_kwh``,
``soc_frac``, per-step energies ``e_charge_kwh``, ``e_discharge_kwh``,
``e_self_discharge_kwh``, ``e_clipped_kwh``, ``meter_kw`` (net power at the
connection point after the battery; this is what goes to the grid),
``follow_residual`` (the mode used), and the static limits.
"""

from __future__ import annotations

from collections.abc import Sequence

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np

from dercosim.devices.battery import BatteryFleet, BatteryParams, StepResult
from dercosim.sims.entities import hand_out
from dercosim.timeseries.rng import rng_for
from dercosim.timeseries.subminute import SubminuteFluctuation
from dercosim.sims.pacing import paced
from dercosim.sims.tables import entity_data, gathered, positions, tabled

STATIC = ["capacity_kwh", "p_charge_max_kw", "p_discharge_max_kw", "soc_min_frac", "soc_max_frac"]
#: p_set_kw: what the controller asked this minute (NaN: nothing asked); p_kw: what the battery did
OUTPUTS = ["p_kw", "soc_kwh", "soc_frac", "e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh",
           "e_clipped_kwh", "meter_kw", "follow_residual", "p_set_kw"] + STATIC
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Battery": {"public": True, "params": [],
                           "attrs": ["residual_kw"] + OUTPUTS}},
}


@tabled
@paced
class BatterySim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.n_created = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, pms_cycle_s: float = 1.0,
             names: Sequence[str] = (), params: dict[str, list[float]] | None = None,
             soc_init_kwh: Sequence[float] = (), default_follow: Sequence[bool] = (),
             subminute_sigma_kw: Sequence[float] = (), subminute_tau_s: float = 10.0, seed: int = 0) -> Meta:
        self.step_s = int(step_s)
        self.names = list(names)
        n = len(self.names)
        self.index = {name: j for j, name in enumerate(self.names)}
        self.params = BatteryParams(**{k: np.asarray(v, float) for k, v in (params or {}).items()})
        self.fleet = BatteryFleet(self.params, np.asarray(soc_init_kwh, float), cycle_s=pms_cycle_s, step_s=step_s)
        self.default_follow = np.asarray(default_follow, bool)
        rng = rng_for(seed, "battery_subminute")
        self.fluctuation = SubminuteFluctuation(n, self.fleet.n_cycles, pms_cycle_s, np.asarray(subminute_sigma_kw),
                                                subminute_tau_s, rng)
        self.last: StepResult | None = None
        self.follow_used = self.default_follow.copy()
        self.p_set_asked = np.full(n, np.nan)
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        """Hands out the next ``num`` batteries of the table given to ``init``."""
        entities, self.n_created = hand_out(self.names, self.n_created, num, model, "batteries")
        return entities

    #: inputs that arrive as arrays (sims/tables.py), not per-battery dicts
    column_inputs = ("residual_kw", "follow_residual", "p_set_kw")

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        residual, _ = gathered(self, "residual_kw")  # 0 where nothing came
        f_total, f_count = gathered(self, "follow_residual")
        p_total, p_count = gathered(self, "p_set_kw")
        f = np.where(f_count > 0, f_total, np.nan)
        # NaN: nothing asked (the PMS holds 0 unless it follows the residual)
        p_set = np.where((p_count > 0) & np.isfinite(p_total), p_total, np.nan)
        follow = np.where(np.isfinite(f), f >= 0.5, self.default_follow)
        noisy = residual[None, :] + self.fluctuation.next_step()
        self.last = self.fleet.step(noisy, follow, np.where(np.isfinite(p_set), p_set, 0.0))
        self.follow_used = follow
        self.p_set_asked = p_set
        return time + self.step_s

    def _vector(self, attr: str) -> np.ndarray | None:
        """``attr`` of every battery, in ``self.names`` order (None: not an output)."""
        r = self.last
        if attr in ("p_kw", "e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh", "e_clipped_kwh", "meter_kw"):
            values = getattr(r, attr) if r else np.zeros(len(self.names))
        elif attr in ("soc_kwh", "soc_frac"):
            values = getattr(self.fleet, attr)
        elif attr == "follow_residual":
            values = self.follow_used
        elif attr == "p_set_kw":
            values = self.p_set_asked
        elif attr in STATIC:
            values = getattr(self.params, attr)
        else:
            return None
        return np.asarray(values, dtype=np.float64)

    def column(self, attr: str, eids: list[str]) -> list[float] | None:
        """``attr`` of the batteries ``eids`` as a list (a simulator's Table, sims/tables.py)."""
        values = self._vector(attr)
        return None if values is None else values[positions(self, eids)].tolist()

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return entity_data(self, outputs)
