"""``dercosim study shared-storage`` and ``study cluster-sizing``: shared storage sized by ADMM, no co-simulation.

shared-storage (Zhao et al. 2024): 5 prosumers with PV and load, 07:00–19:00
hourly, under the paper's two-part tariff (valley 0.37 / flat 0.82 / peak
1.36 CNY/kWh, 38 CNY per kW-month of demand charge, 0.3 CNY/kWh feed-in)
share a station that sizes itself (0.650 CNY/kWh and 0.245 CNY/kW of rating
for the day, 0.1 CNY/kWh of O&M, efficiencies 0.94 and 1/1.05, SoC in
[0.2, 1], cyclic). The paper's load and PV curves exist only as figures, so
they are generated from dercosim's profiles (BDEW H25 load shape scaled to
small commercial prosumers, pvlib PV on the bundled TMY3 weather, both from
the seed). Three readings of the paper need stating:

- its "energy rate coefficient 0.3" is read as P = 0.3 E (γ = E/P = 3.33 h).
  Read literally as E = 0.3 P, a kWh of rating would cost 0.65 + 0.245/0.3 =
  1.47 CNY a day, more than storing PV for the peak earns in a day; the study
  reports that case too (on the default case it builds a small station,
  81 kWh / 271 kW, for the demand charge, and the total is worse);
- its discharge efficiency 1.05 is read as "1.05 kWh drawn per kWh
  delivered", i.e. η_d = 1/1.05;
- the monthly demand charge is applied per day as 38/30 CNY per kW of peak.

cluster-sizing (Feng et al. 2025): 3 microgrids (wind, PV, gas turbine,
load; MW scale) around a shared storage bus over a day. The upper tier (the
station) sizes E and P independently, the lower tier schedules each
microgrid; ADMM with absolute and relative tolerances couples them. Grid
prices by period are the paper's; what microgrids pay the station and are
paid by it is settled at the paper's SES sale and purchase prices. The paper
gives neither its investment costs nor its scenario curves, so: capital
1,000 CNY/kWh and 600 CNY/kW annuitised at 8 % over 10 years per day, O&M
0.05 CNY/kWh, feed-in 0.3 CNY/kWh, gas turbines at 0.60 CNY/kWh (linear: HiGHS's
QP solver stalled on the central problem with a small quadratic fuel term). Its station (13,898.72 kWh, 2,869.35 kW) served a larger
cluster with four scenario days; our size follows our data.

References
----------
- Zhao et al. 2024: L. Zhao, J. Zhang, Q. Lv, Z. Zhang, P. Gao and R. Zhang, "AADMM based shared energy storage
    planning for resilience improvement of renewable energy stations," Frontiers in Energy Research
    12:1467627, 2024.
- Feng et al. 2025: J. Feng, X. Zhang, S. Wang and W. Zhao, "ADMM-Based Two-Tier Distributed Collaborative
    Allocation Planning for Shared Energy Storage Capacity in Microgrid Cluster," Electronics 14(16):3234, 2025.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dercosim.planning.admm import ADMMSettings
from dercosim.planning.sharing import (GridTariff, Party, SharingOutcome, SharingProblem, StationSpec, solve_alone,
                                          solve_centralised, solve_distributed)
from dercosim.timeseries.rng import DayStreams, rng_for

#: Zhao et al. 2024, Tables 1 and 2
PAPER_PROSUMERS: dict[str, Any] = {"self_sufficiency_alone": 0.7105, "self_sufficiency_shared": 0.9291, "cost_alone": 1090.78,
                   "cost_shared": 1042.82, "station_kwh": 333.50,
                   "iterations": {0.1: (28, 26), 0.3: (58, 25), 0.5: (102, 35)}}
#: Feng et al. 2025, Table of results
PAPER_CLUSTER = {"station_kwh": 13898.72, "station_kw": 2869.35}
#: residual balancing: the engine's defaults, and the constants of Zhao et al. 2024 (ν = 3, θ = 0.8 → 1/θ = 1.25)
BALANCING: dict[str, dict[str, Any]] = {"engine": {"factor": 2.0, "ratio": 10.0, "balance": "relative"},
             "paper": {"factor": 3.0, "ratio": 1.25, "balance": "absolute"}}


def tou_cny(hours: np.ndarray) -> np.ndarray:
    """Zhao et al. 2024's energy price by hour of day (CNY/kWh): valley 0–8, peak 8–12 and 17–21, flat otherwise."""
    h = np.asarray(hours) % 24
    peak = ((h >= 8) & (h < 12)) | ((h >= 17) & (h < 21))
    return np.where(h < 8, 0.37, np.where(peak, 1.36, 0.82))


def ses_prices_cny(hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feng et al. 2025's prices by hour (CNY/kWh): grid sale, SES sale, SES purchase."""
    h = np.asarray(hours) % 24
    peak = ((h >= 8) & (h < 12)) | ((h >= 17) & (h < 21))
    valley = h < 8

    def pick(p: float, f: float, v: float) -> np.ndarray:
        return np.where(valley, v, np.where(peak, p, f))

    return pick(1.36, 0.82, 0.37), pick(1.15, 0.75, 0.40), pick(0.95, 0.55, 0.20)


def _hourly(times: pd.DatetimeIndex, minute_kw: np.ndarray) -> np.ndarray:
    """Hourly means (H, n) of minute series (H·60, n)."""
    return minute_kw.reshape(len(times) // 60, 60, -1).mean(axis=1)


def _profiles(seed: int, date: str, first_hour: int, n_h: int, annual_kwh: np.ndarray, kwp: np.ndarray,
              wind_kw: np.ndarray, sigma: float, site: str = "greensboro_tmy3") -> tuple[np.ndarray, ...]:
    from dercosim.timeseries.loads import household_load_kw
    from dercosim.timeseries.pv import pv_ac_kw
    from dercosim.timeseries.weather import get_site, time_index
    from dercosim.timeseries.wind import wind_ac_kw

    s = get_site(site)
    start = pd.Timestamp(date, tz=s.tz) + pd.Timedelta(hours=first_hour)
    times = time_index(start, n_h * 60, 60, s.tz)
    load = household_load_kw(times, annual_kwh, DayStreams(seed, "sharing.load"), sigma=sigma, event_share=0.0)
    rng = rng_for(seed, "sharing.pv")
    n = len(kwp)
    pv = pv_ac_kw(s, times, kwp, rng.uniform(15, 35, n), rng.uniform(150, 210, n), DayStreams(seed, "sharing.clouds"))
    wind = wind_ac_kw(s, times, wind_kw, np.full(n, 60.0))
    return _hourly(times, load), _hourly(times, pv), _hourly(times, wind)


def prosumer_case(seed: int = 0, date: str = "2016-06-01", e_to_p_h: float = 1 / 0.3) -> SharingProblem:
    """Zhao et al. 2024's case on dercosim's profiles: 5 PV prosumers, 07:00–19:00, see the module doc."""
    rng = rng_for(seed, "sharing.prosumers")
    n, first, n_h = 5, 7, 12
    annual = rng.uniform(200e3, 450e3, n)  # kWh/year: small commercial prosumers, 23–51 kW on average
    kwp = rng.uniform(30.0, 90.0, n)
    load, pv, _ = _profiles(seed, date, first, n_h, annual, kwp, np.zeros(n), sigma=0.15)
    hours = np.arange(first, first + n_h)
    parties = tuple(Party(f"prosumer {i + 1}", load[:, i], pv[:, i]) for i in range(n))
    tariff = GridTariff(tou_cny(hours), np.full(n_h, 0.3), demand_charge_per_kw=38.0 / 30.0)
    station = StationSpec(cost_per_kwh=0.650, cost_per_kw=0.245, om_per_kwh=0.1, eta_charge=0.94,
                          eta_discharge=1 / 1.05, soc_min=0.2, e_to_p_h=e_to_p_h)
    return SharingProblem(parties, tariff, station)


def cluster_case(seed: int = 0, date: str = "2016-06-01") -> SharingProblem:
    """Feng et al. 2025's cluster on dercosim's profiles: 3 microgrids over a day, see the module doc."""
    n_h = 24
    annual = np.array([9e6, 6e6, 14e6])  # kWh/year: 1.0, 0.7 and 1.6 MW on average
    kwp = np.array([800.0, 4000.0, 1500.0])
    wind = np.array([3000.0, 0.0, 1200.0])
    load, pv, wnd = _profiles(seed, date, 0, n_h, annual, kwp, wind, sigma=0.05)
    grid, ses_sale, ses_buy = ses_prices_cny(np.arange(n_h))
    gt_max = np.array([500.0, 300.0, 1500.0])
    parties = tuple(Party(f"microgrid {i + 1}", load[:, i], pv[:, i], wnd[:, i], gt_max_kw=gt_max[i],
                          gt_cost_per_kwh=0.60, exchange_max_kw=3000.0) for i in range(3))
    crf = 0.08 / (1 - 1.08 ** -10)  # capital recovery factor, 8 %, 10 years
    station = StationSpec(cost_per_kwh=1000.0 * crf / 365, cost_per_kw=600.0 * crf / 365, om_per_kwh=0.05,
                          eta_charge=0.95, eta_discharge=0.95, self_discharge_per_h=0.001, soc_min=0.2)
    return SharingProblem(parties, GridTariff(grid, np.full(n_h, 0.3)), station,
                          ses_sale_per_kwh=ses_sale, ses_purchase_per_kwh=ses_buy)


def settings(rho: float, adaptive: str | None = None, eps_abs: float = 1e-3, eps_rel: float = 1e-4,
             max_iter: int = 2000) -> ADMMSettings:
    """Synchronous ADMM, no network delay; ``adaptive``: None (fixed ρ), "engine" or "paper" residual balancing."""
    s = ADMMSettings(rho=rho, eps_abs=eps_abs, eps_rel=eps_rel, max_iter=max_iter)
    return s if adaptive is None else replace(s, adaptive=True, **BALANCING[adaptive])


@dataclass
class SharedStorageStudy:
    alone: SharingOutcome
    central: SharingOutcome
    literal_gamma: SharingOutcome  #: centralised, with E = 0.3 P read literally
    runs: pd.DataFrame  #: one row per (ρ₀, variant): iterations, converged, cost, gap, station size, wall
    histories: dict[tuple[float, str], pd.DataFrame]


VARIANTS = ("fixed", "engine", "paper")


def shared_storage_study(seed: int = 0, rhos: tuple[float, ...] = (0.1, 0.3, 0.5), eps_abs: float = 1e-3,
                         eps_rel: float = 1e-4) -> SharedStorageStudy:
    problem = prosumer_case(seed)
    alone, central = solve_alone(problem), solve_centralised(problem)
    literal = solve_centralised(prosumer_case(seed, e_to_p_h=0.3))
    rows, hist = [], {}
    for rho in rhos:
        for v in VARIANTS:
            out = solve_distributed(problem, settings(rho, None if v == "fixed" else v, eps_abs, eps_rel))
            r = out.admm
            assert r is not None  # solve_distributed always runs the ADMM
            rows.append({"rho0": rho, "variant": v, "iterations": r.iterations, "converged": r.converged,
                         "cost": out.total_cost, "gap": (out.total_cost - central.total_cost) / central.total_cost,
                         "station_kwh": out.e_kwh, "rho_final": float(r.history.rho.iloc[-1]), "wall_s": r.wall_s})
            hist[(rho, v)] = r.history
    return SharedStorageStudy(alone, central, literal, pd.DataFrame(rows), hist)


@dataclass
class ClusterStudy:
    alone: SharingOutcome
    central: SharingOutcome
    admm: SharingOutcome
    table: pd.DataFrame  #: per microgrid and the station: cost alone, with sharing (own + settlement)


def cluster_sizing_study(seed: int = 0, rho: float = 0.01, eps_abs: float = 1e-2, eps_rel: float = 1e-4,
                         adaptive: str | None = None) -> ClusterStudy:
    problem = cluster_case(seed)
    alone, central = solve_alone(problem), solve_centralised(problem)
    admm = solve_distributed(problem, settings(rho, adaptive, eps_abs, eps_rel, max_iter=3000))
    rows = []
    for i, p in enumerate(problem.parties):
        rows.append({"party": p.name, "cost_alone": alone.party_cost[i],
                     "own_cost_shared": admm.party_cost[i], "settlement": admm.party_settlement[i],
                     "cost_shared": admm.party_cost[i] + admm.party_settlement[i]})
    received = float(admm.party_settlement.sum())
    rows.append({"party": "station", "cost_alone": 0.0, "own_cost_shared": admm.station_cost,
                 "settlement": -received, "cost_shared": admm.station_cost - received})
    table = pd.DataFrame(rows)
    total = table[["cost_alone", "own_cost_shared", "settlement", "cost_shared"]].sum()
    table = pd.concat([table, pd.DataFrame([{"party": "total", **total.to_dict()}])], ignore_index=True)
    return ClusterStudy(alone, central, admm, table)


def plot_iterations(study: SharedStorageStudy, path: Path) -> Path:
    """Primal residual per iteration for each ρ₀ and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos = sorted({k[0] for k in study.histories})
    fig, axes = plt.subplots(1, len(rhos), figsize=(4.2 * len(rhos), 3.6), sharey=True)
    for ax, rho in zip(np.atleast_1d(axes), rhos):
        for v, style in zip(VARIANTS, ("-", "--", ":")):
            h = study.histories[(rho, v)]
            ax.semilogy(h.iteration, h.r_primal, style, label={"fixed": "fixed ρ", "engine": "adaptive (engine)",
                                                                 "paper": "adaptive (factor 3, ratio 1.25)"}[v])
        ax.set_title(f"ρ₀ = {rho:g}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("primal residual ‖x − z‖ (kW)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Shared storage among 5 prosumers: ADMM with fixed and adaptive ρ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_cluster(study: ClusterStudy, path: Path) -> Path:
    """Convergence (residuals, cost) and the station's exchange with each microgrid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert study.admm.admm is not None
    h = study.admm.admm.history
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.semilogy(h.iteration, h.r_primal, label="primal ‖x − z‖ (kW)")
    a1.semilogy(h.iteration, h.r_dual, label="dual ‖z − z_prev‖ (kW)")
    a1.semilogy(h.iteration, h.eps_pri, ":", color="grey", label="tolerance")
    a1.set_xlabel("iteration")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a1.set_title("ADMM convergence")
    for i, row in enumerate(study.admm.exchange_kw):
        a2.step(np.arange(len(row)), row / 1000, where="post", label=f"microgrid {i + 1}")
    a2.axhline(0, color="k", lw=0.5)
    a2.set_xlabel("hour")
    a2.set_ylabel("to the station (MW)")
    a2.legend(fontsize=8)
    a2.set_title(f"station {study.admm.e_kwh:,.0f} kWh, {study.admm.p_kw:,.0f} kW")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- cooperative price-maker storage (Solà Vilalta, Anjos and Cruise 2022) ---

#: residual-demand slope of the price-maker studies: £0.05/MWh per MWh traded in a half hour, in GBP/kWh per kWh
PRICE_MAKER_SLOPE = 0.05 / 1000 / 1000
#: the two-unit case: (P kW, E kWh) — a 50 MW / 100 MWh and a 20 MW / 80 MWh unit
TWO_UNITS = ((50e3, 100e3), (20e3, 80e3))


def gb_prices(days: int, market: str = "gb_n2ex") -> np.ndarray:
    """The bundled GB day-ahead prices from 1 June 2016, GBP/kWh per half hour, ``days`` long."""
    from dercosim.timeseries.prices import price_periods

    prices = price_periods(market).to_numpy()
    if not 1 <= days <= len(prices) // 48:
        raise ValueError(f"days must be 1..{len(prices) // 48} (the bundled GB prices), got {days}")
    return prices[:48 * days]


def fleet_units(n: int, seed: int = 0, total_mw: float = 70.0) -> list:
    """``n`` units sharing ``total_mw`` of power (random split from the seed), E/P of 1–4 h, half full at both ends.

    The fleet's total stays the same as n grows, so its market impact does too
    and only the decomposition's work changes.
    """
    from dercosim.planning.sharing.price_maker import StorageUnit

    if n == 2:
        return [StorageUnit(p, e, e / 2) for p, e in TWO_UNITS]
    rng = rng_for(seed, f"pricemaker.units.{n}")
    share = rng.uniform(0.5, 1.5, n)
    p_kw = total_mw * 1000 * share / share.sum()
    e_kwh = p_kw * rng.uniform(1.0, 4.0, n)
    return [StorageUnit(float(p), float(e), float(e) / 2) for p, e in zip(p_kw, e_kwh)]


def price_maker_settings(rho: float = 1e-6) -> ADMMSettings:
    """ADMM for the price-maker fleet: adaptive ρ (engine defaults), tolerances in kWh per half hour."""
    return ADMMSettings(rho=rho, eps_abs=1.0, eps_rel=1e-5, max_iter=2000, adaptive=True)


def price_maker_study(units: tuple[int, ...] = (2, 10, 100), days: int = 7, seed: int = 0,
                      window_days: float = 2.0, slope: float = PRICE_MAKER_SLOPE,
                      log=None) -> pd.DataFrame:  # noqa: ANN001 - log: Callable[[str], None] | None
    """Per fleet size: central QP and ADMM (whole horizon and time-decomposed) — cost, gap, wall time, iterations.

    The time decomposition solves windows of ``window_days`` and keeps the
    first day of each. The two-unit row also gives the price-taker (zero
    slope) cost and how much the market impact reduces the traded volume.
    """
    from dercosim.planning.sharing.price_maker import ResidualDemand, solve_admm, solve_central, solve_rolling

    prices = gb_prices(days)
    market = ResidualDemand(prices, slope)
    rows = []
    for n in units:
        fleet = fleet_units(n, seed)
        central = solve_central(fleet, market, dt_h=0.5)
        admm = solve_admm(fleet, market, price_maker_settings(), dt_h=0.5)
        rolled = solve_rolling(fleet, market, price_maker_settings(), dt_h=0.5, window=int(window_days * 48),
                               commit=48)
        row = {"units": n, "central_cost": central.cost, "central_s": central.wall_s,
               "admm_cost": admm.cost, "admm_gap": (admm.cost - central.cost) / abs(central.cost),
               "admm_iterations": admm.iterations, "admm_s": admm.wall_s, "admm_converged": admm.converged,
               "rolling_cost": rolled.cost, "rolling_gap": (rolled.cost - central.cost) / abs(central.cost),
               "rolling_iterations": rolled.iterations, "rolling_s": rolled.wall_s,
               "traded_mwh": float(np.abs(central.x_kwh.sum(axis=0)).sum()) / 1000}
        if n == 2:
            taker = solve_central(fleet, ResidualDemand(prices, 0.0), dt_h=0.5)
            row["price_taker_traded_mwh"] = float(np.abs(taker.x_kwh.sum(axis=0)).sum()) / 1000
            row["price_taker_cost_at_impact"] = market.cost(taker.x_kwh.sum(axis=0))
        rows.append(row)
        if log is not None:
            log(f"  {n} units: central {central.wall_s:.2f} s, ADMM {admm.wall_s:.2f} s "
                f"({admm.iterations} it., gap {row['admm_gap']:+.2e}), rolling {rolled.wall_s:.2f} s")
    return pd.DataFrame(rows)


def plot_price_maker(table: pd.DataFrame, path: Path, currency: str = "GBP") -> Path:
    """Price-maker storage per fleet size: the cost of the period by the centralised optimum, ADMM and the rolling
    horizon (left), and their wall time (right, log scale) — Solà Vilalta, Anjos and Cruise 2022."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(table))
    labels = [str(int(u)) for u in table["units"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    methods = [("central", "centralised (HiGHS)"), ("admm", "ADMM"), ("rolling", "ADMM, rolling horizon")]
    width = 0.8 / len(methods)
    for k, (key, label) in enumerate(methods):
        if f"{key}_cost" not in table:
            continue
        bars = ax1.bar(x + (k - 1) * width, table[f"{key}_cost"], width, label=label)
        ax1.bar_label(bars, fmt="%.0f", fontsize=6, padding=2)
        ax2.plot(labels, table[f"{key}_s"], "o-", label=label)
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_xticks(x, labels)
    ax1.set_xlabel("storage units")
    ax1.set_ylabel(f"cost of the period ({currency}; < 0 = profit)")
    ax1.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax1.set_title("price-maker storage: cost by method")
    ax1.legend(fontsize=8)
    ax2.set_yscale("log")
    ax2.set_xlabel("storage units")
    ax2.set_ylabel("wall time (s)")
    ax2.set_title("solve time")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
