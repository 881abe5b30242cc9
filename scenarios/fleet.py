"""The households a scenario asks for: parameters drawn from the seed, and their minute profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scenarios.config import Scenario
from timeseries import loads, pv, weather
from timeseries.rng import rng_for


def draw_households(scenario: Scenario) -> pd.DataFrame:
    """One row per household: ``name, group, bus, annual_kwh, power_factor, pv_kwp, pv_tilt_deg, pv_azimuth_deg``.

    ``pv_kwp`` is 0 for households without PV. Within a group, exactly
    ``round(pv_share * n)`` households get PV, chosen by the seed.
    """
    rng = rng_for(scenario.seed, "households")
    rows = []
    for group in scenario.households.groups:
        buses = np.repeat(np.asarray(group.buses, int), group.per_bus)
        n = len(buses)
        has_pv = np.zeros(n, bool)
        has_pv[rng.permutation(n)[: int(round(group.pv_share * n))]] = True
        table = pd.DataFrame({
            "name": [f"{group.name}_{i + 1:03d}" for i in range(n)],
            "group": group.name,
            "bus": buses,
            "annual_kwh": rng.uniform(*group.annual_kwh, size=n),
            "power_factor": group.power_factor,
            "pv_kwp": np.where(has_pv, rng.uniform(*group.pv_kwp, size=n), 0.0),
            "pv_tilt_deg": np.where(has_pv, rng.uniform(*group.pv_tilt_deg, size=n), 0.0),
            "pv_azimuth_deg": np.where(has_pv, rng.uniform(*group.pv_azimuth_deg, size=n), 0.0),
        })
        rows.append(table)
    if not rows:
        return pd.DataFrame(columns=["name", "group", "bus", "annual_kwh", "power_factor", "pv_kwp",
                                     "pv_tilt_deg", "pv_azimuth_deg"])
    return pd.concat(rows, ignore_index=True)


def household_profiles(scenario: Scenario, table: pd.DataFrame,
                       times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Load and PV (kW) per minute for each household of ``table``; shapes (len(times), n).

    Generated on whole calendar days and cut to ``times``, so a shorter run
    sees exactly the first part of the longer run's numbers.
    """
    site = weather.get_site(scenario.site.weather)
    days = weather.whole_days(times)
    load = loads.household_load_kw(days, table["annual_kwh"].to_numpy(float),
                                   rng_for(scenario.seed, "household_load"))
    pv_kw = pv.pv_ac_kw(site, days, table["pv_kwp"].to_numpy(float), table["pv_tilt_deg"].to_numpy(float),
                        table["pv_azimuth_deg"].to_numpy(float), rng_for(scenario.seed, "pv_clouds"))
    pos = days.get_indexer(times)
    return load[pos], pv_kw[pos]


def base_load_shape(scenario: Scenario, times: pd.DatetimeIndex) -> np.ndarray:
    """Multiplier of the case's base load at each of ``times``: scale × daily shape."""
    shape = scenario.grid.base_load
    daily = np.ones(len(times)) if shape.shape == "flat" else loads.daily_shape(times)
    return shape.scale * daily
