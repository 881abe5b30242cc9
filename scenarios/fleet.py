"""The households a scenario asks for: parameters drawn from the seed, and their minute profiles.

:class:`Fleet` holds what is drawn (households, their HVAC, batteries — no profiles); the run resolved once from
a scenario, profiles included, is :class:`~dercosim.scenarios.resolve.RunInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dercosim.scenarios.config import Scenario, ScenarioError
from dercosim.timeseries import weather
from dercosim.timeseries.rng import rng_for


def draw_households(scenario: Scenario) -> pd.DataFrame:
    """One row per household: ``name, group, bus, annual_kwh, homes, power_factor, pv_kwp, pv_tilt_deg, pv_azimuth_deg``.

    A household entity may stand for ``homes`` homes (a community); ``annual_kwh`` is then their total.

    ``pv_kwp`` is 0 for households without PV. Within a group, exactly
    ``round(pv_share * n)`` households get PV, chosen by the seed.
    """
    rng = rng_for(scenario.seed, "households")
    rows = []
    for group in scenario.households.groups:
        buses = np.repeat(np.asarray(group.buses, int), group.per_bus)
        n = len(buses)
        has_pv = np.zeros(n, bool)
        order = rng.permutation(n)
        n_pv = int(round(group.pv_share * n))
        has_pv[order[:n_pv]] = True
        table = pd.DataFrame({
            "name": [f"{group.name}_{i + 1:03d}" for i in range(n)],
            "group": group.name,
            "bus": buses,
            "annual_kwh": rng.uniform(*group.annual_kwh, size=n) * group.aggregate,
            "homes": group.aggregate,
            "power_factor": group.power_factor,
            "pv_kwp": np.where(has_pv, rng.uniform(*group.pv_kwp, size=n), 0.0),
            "pv_tilt_deg": np.where(has_pv, rng.uniform(*group.pv_tilt_deg, size=n), 0.0),
            "pv_azimuth_deg": np.where(has_pv, rng.uniform(*group.pv_azimuth_deg, size=n), 0.0),
        })
        # wind turbines among those without PV; drawn from their own stream, so adding wind to a group
        # leaves every other draw of the seed as it was
        wind_rng = rng_for(scenario.seed, f"wind:{group.name}")
        has_wind = np.zeros(n, bool)
        has_wind[order[n_pv:n_pv + int(round(group.wind_share * n))]] = True
        table["wind_kw"] = np.where(has_wind, wind_rng.uniform(*group.wind_kw, size=n), 0.0)
        table["wind_hub_height_m"] = np.where(has_wind, group.wind_hub_height_m, 0.0)
        rows.append(table)
    if not rows:
        return pd.DataFrame(columns=["name", "group", "bus", "annual_kwh", "homes", "power_factor", "pv_kwp",
                                     "pv_tilt_deg", "pv_azimuth_deg", "wind_kw", "wind_hub_height_m"])
    return pd.concat(rows, ignore_index=True)


def household_profiles(scenario: Scenario, table: pd.DataFrame, times: pd.DatetimeIndex,
                       site: weather.Site | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and PV (kW) per minute for each household of ``table``; shapes (len(times), n).

    Generated on whole calendar days (:func:`day_profiles`) and cut to
    ``times``, so a shorter run sees exactly the first part of the longer
    run's numbers.
    """
    days = weather.whole_days(times)
    load, pv_kw = day_profiles(scenario, table, days, site)
    pos = days.get_indexer(times)
    return load[pos], pv_kw[pos]


def day_profiles(scenario: Scenario, table: pd.DataFrame, days: pd.DatetimeIndex,
                 site: weather.Site | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and PV (kW) per minute over ``days`` (whole calendar days, :func:`weather.whole_days`)."""
    from dercosim.timeseries import loads, pv  # demandlib and pvlib: only when profiles are made

    site = site if site is not None else weather.get_site(scenario.site.weather)
    homes = table["homes"].to_numpy(int) if "homes" in table else np.ones(len(table), int)
    per_home = np.repeat(table["annual_kwh"].to_numpy(float) / homes, homes)
    # only homes with a demand draw a profile: a plant (annual_kwh = 0) added to a scenario leaves every
    # household's profile as it was (fleet_market_s2/s3 against s0)
    has_load = per_home > 0
    load = np.zeros((len(days), len(per_home)))
    if has_load.any():
        load[:, has_load] = loads.household_load_kw(days, per_home[has_load], rng_for(scenario.seed, "household_load"))
    if np.any(homes > 1):  # a community's load is the sum of its homes' own profiles
        load = np.add.reduceat(load, np.concatenate([[0], np.cumsum(homes)[:-1]]), axis=1)
    pv_kw = pv.pv_ac_kw(site, days, table["pv_kwp"].to_numpy(float), table["pv_tilt_deg"].to_numpy(float),
                        table["pv_azimuth_deg"].to_numpy(float), rng_for(scenario.seed, "pv_clouds"))
    return load, pv_kw


def base_load_shape(scenario: Scenario, times: pd.DatetimeIndex) -> np.ndarray:
    """Multiplier of the case's base load at each of ``times``: scale × daily shape."""
    from dercosim.timeseries import loads

    shape = scenario.grid.base_load
    daily = np.ones(len(times)) if shape.shape == "flat" else loads.daily_shape(times)
    return shape.scale * daily


def draw_hvac(scenario: Scenario, table: pd.DataFrame) -> dict[str, np.ndarray]:
    """HVAC parameters per household of ``table`` (``p_max_kw`` = 0: no HVAC), drawn from the seed."""
    rng = rng_for(scenario.seed, "hvac")
    n = len(table)
    out = {k: np.zeros(n) for k in ("p_max_kw", "c_kwh_per_c", "r_c_per_kw", "mu", "t_set_c", "band_c")}
    for group in scenario.households.groups:
        rows = np.flatnonzero(table["group"].to_numpy() == group.name)
        m = len(rows)
        has = np.zeros(m, bool)
        has[rng.permutation(m)[: int(round(group.hvac_share * m))]] = True
        sign = 1.0 if group.hvac_mode == "cooling" else -1.0
        out["p_max_kw"][rows] = np.where(has, rng.uniform(*group.hvac_p_max_kw, size=m), 0.0)
        out["mu"][rows] = sign * rng.uniform(*group.hvac_cop, size=m)
        out["c_kwh_per_c"][rows] = rng.uniform(*group.hvac_c_kwh_per_c, size=m)
        out["r_c_per_kw"][rows] = rng.uniform(*group.hvac_r_c_per_kw, size=m)
        out["t_set_c"][rows] = group.t_set_c
        out["band_c"][rows] = group.comfort_band_c
    out["t_init_c"] = out["t_set_c"].copy()
    return out


BATTERY_COLUMNS = ["name", "group", "household", "bus", "capacity_kwh", "p_charge_max_kw", "p_discharge_max_kw",
                   "eta_charge", "eta_discharge", "soc_min_frac", "soc_max_frac", "self_discharge_per_h",
                   "soc_init_kwh", "default_follow"]


def draw_batteries(scenario: Scenario, households: pd.DataFrame) -> pd.DataFrame:
    """One row per battery; ``household`` is empty for batteries on a bus. Initial SoC drawn from the seed."""
    rng = rng_for(scenario.seed, "batteries")
    rows = []
    for group in scenario.batteries.groups:
        if group.at == "households":
            hh = households
            if group.household_group is not None:
                hh = hh[hh["group"] == group.household_group]
            if group.households == "with_pv":
                hh = hh[hh["pv_kwp"] > 0]
            owners, buses = hh["name"].tolist(), hh["bus"].astype(int).tolist()
            names = [f"{group.name}_{h}" for h in owners]
        else:
            owners, buses = [""] * len(group.buses), list(group.buses)
            names = [f"{group.name}_bus{b}" for b in buses]
        low, high = group.soc_init_frac
        if group.soc_init_dist == "truncnorm" and high > low:
            from scipy.stats import truncnorm

            sd = (high - low) / 4.0
            frac = truncnorm.rvs(-2.0, 2.0, loc=(low + high) / 2, scale=sd, size=len(names), random_state=rng)
        else:
            frac = rng.uniform(low, high, size=len(names))
        soc0 = np.atleast_1d(frac) * group.capacity_kwh
        for name, owner, bus, s0 in zip(names, owners, buses, soc0):
            rows.append({"name": name, "group": group.name, "household": owner, "bus": bus,
                         "capacity_kwh": group.capacity_kwh, "p_charge_max_kw": group.p_charge_max_kw,
                         "p_discharge_max_kw": group.p_discharge_max_kw, "eta_charge": group.eta_charge,
                         "eta_discharge": group.eta_discharge, "soc_min_frac": group.soc_min_frac,
                         "soc_max_frac": group.soc_max_frac, "self_discharge_per_h": group.self_discharge_per_h,
                         "soc_init_kwh": float(s0), "default_follow": group.default_mode == "follow_residual"})
    table = pd.DataFrame(rows, columns=BATTERY_COLUMNS)
    dup = table["household"][table["household"] != ""].duplicated()
    if dup.any():
        twice = sorted(table["household"][dup.index[dup]])
        raise ScenarioError(f"batteries.groups: households with more than one battery: {twice}")
    return table


def controlled_households(scenario: Scenario, table: pd.DataFrame, batteries: pd.DataFrame,
                          hvac: dict[str, np.ndarray] | None = None) -> list[str]:
    """Names of the households the HEMS controller ``applies_to``, in table order."""
    applies_to = scenario.hems.applies_to
    if applies_to == "all":
        return list(table["name"])
    if applies_to == "with_battery":
        owners = set(batteries.loc[batteries["household"] != "", "household"])
        return [n for n in table["name"] if n in owners]
    hvac = hvac if hvac is not None else draw_hvac(scenario, table)
    return [n for n, p in zip(table["name"], hvac["p_max_kw"]) if p > 0]


@dataclass(frozen=True)
class Fleet:
    """What a scenario draws from its seed: households, their HVAC, and the batteries (no profiles)."""

    households: pd.DataFrame  #: one row per household (see :func:`draw_households`)
    hvac: dict[str, np.ndarray]  #: per household (see :func:`draw_hvac`); ``p_max_kw`` 0 = none
    batteries: pd.DataFrame  #: one row per battery (see :func:`draw_batteries`)

    @classmethod
    def draw(cls, scenario: Scenario) -> Fleet:
        households = draw_households(scenario)
        return cls(households, draw_hvac(scenario, households), draw_batteries(scenario, households))

    def controlled(self, scenario: Scenario) -> list[str]:
        """The households the scenario's HEMS controller applies to."""
        return controlled_households(scenario, self.households, self.batteries, self.hvac)


def portfolio(scenario: Scenario, households: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the aggregator's plants, the households in its portfolio) by name, per ``[market]``."""
    m = scenario.market
    if m is None:
        return [], []
    groups = households["group"]
    central = households.loc[groups.isin(m.central_groups), "name"].tolist()
    members = (~groups.isin(m.central_groups)) if m.portfolio_groups is None else groups.isin(m.portfolio_groups)
    return central, households.loc[members, "name"].tolist()


def contract_members(scenario: Scenario, households: pd.DataFrame, batteries: pd.DataFrame) -> list[str]:
    """Who reports to the smart contract: every battery owner among the portfolio's households and plants."""
    central, members = portfolio(scenario, households)
    owners = set(batteries.loc[batteries["household"] != "", "household"])
    inside = set(central) | set(members)
    return [n for n in households["name"] if n in owners and n in inside]


def contract_meters(scenario: Scenario, households: pd.DataFrame, batteries: pd.DataFrame) -> list[str]:
    """The portfolio's other meters (plants, households without a battery): they report exports to the contract,
    so its remaining commitment is the portfolio's, as the market settles it."""
    central, members = portfolio(scenario, households)
    storage = set(contract_members(scenario, households, batteries))
    inside = set(central) | set(members)
    return [n for n in households["name"] if n in inside and n not in storage]
