"""The households a scenario asks for: parameters drawn from the seed, and their minute profiles.

:class:`Fleet` holds what is drawn (households, their HVAC, batteries — no profiles); the run resolved once from
a scenario, profiles included, is :class:`~dercosim.scenarios.resolve.RunInputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dercosim.scenarios.config import Scenario, ScenarioError
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
    """What a scenario draws from its seed (households, their HVAC, the batteries; no profiles) and who plays
    which part: the aggregator's plants and portfolio, the smart contract's members and meters, the households
    the HEMS controller applies to (all by household name, in table order)."""

    households: pd.DataFrame  #: one row per household (see :func:`draw_households`)
    hvac: dict[str, np.ndarray]  #: per household (see :func:`draw_hvac`); ``p_max_kw`` 0 = none
    batteries: pd.DataFrame  #: one row per battery (see :func:`draw_batteries`)
    plants: list[str]  #: the aggregator's own plants (``market.central_groups``); empty without ``[market]``
    portfolio: list[str]  #: the households in the aggregator's portfolio (billed); empty without ``[market]``
    contract_members: list[str]  #: battery owners among the plants and portfolio: weights and RE
    contract_meters: list[str]  #: the portfolio's other meters (plants, households without a battery)
    controlled: list[str]  #: the households ``hems.applies_to`` selects

    @classmethod
    def draw(cls, scenario: Scenario) -> Fleet:
        households = draw_households(scenario)
        hvac = draw_hvac(scenario, households)
        batteries = draw_batteries(scenario, households)
        plants, portfolio_ = portfolio(scenario, households)
        return cls(households, hvac, batteries, plants, portfolio_,
                   contract_members(scenario, households, batteries), contract_meters(scenario, households, batteries),
                   controlled_households(scenario, households, batteries, hvac))


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
