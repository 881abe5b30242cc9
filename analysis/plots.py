"""The run's PNG plots, drawn from its recorded rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dercosim.analysis.results import Recorded, bus_voltages, has_rows, plan_vs_ac, rows_of

if TYPE_CHECKING:
    from dercosim.scenarios.config import Scenario

def plot_all(df: pd.DataFrame | Recorded, scenario: Scenario, out_dir: str | Path,
             tables: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Write the run's PNG plots (from its recorded rows) to ``out_dir``; returns their paths. ``tables``: what
    :func:`~dercosim.analysis.summary.summarize` computed (the market's settlement per interval, also written to
    ``market.csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    feeder = rows_of(df, "feeder").set_index("time_s").sort_index()
    t = feeder["time"].dt.tz_localize(None)
    vm = bus_voltages(df)
    lo, hi = scenario.grid.v_min_pu, scenario.grid.v_max_pu
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(t, vm.min(axis=1), vm.max(axis=1), color="tab:blue", alpha=0.25, label="range over buses")
    ax.plot(t, vm.min(axis=1), color="tab:blue", lw=1, label="min over buses")
    ax.plot(t, vm.max(axis=1), color="tab:orange", lw=1, label="max over buses")
    for limit in (lo, hi):
        ax.axhline(limit, color="tab:red", ls="--", lw=1)
    failed = ~feeder["converged"].astype(bool)
    if failed.any():
        ax.plot(t[failed.values], np.full(failed.sum(), lo), "kx", label="power flow failed")
    ax.set_ylabel("voltage (pu)")
    ax.set_title(f"{scenario.name}: voltage envelope (limits {lo}–{hi} pu)")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    paths.append(_save(fig, out_dir / "voltage_envelope.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, feeder["p_head_kw"], label="feeder head P")
    ax.plot(t, feeder["base_p_kw"], lw=1, ls=":", label="base load P")
    ax.plot(t, feeder["losses_kw"], lw=1, label="line losses")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("kW (positive = drawn from upstream)")
    ax.set_title(f"{scenario.name}: feeder-head active power")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    paths.append(_save(fig, out_dir / "feeder_head_power.png"))

    deviation = np.maximum(lo - vm, vm - hi).max(axis=1).where(feeder["converged"].astype(bool).values)
    worst = deviation.idxmax() if deviation.notna().any() else vm.index[0]
    from dercosim.analysis.validate import branch_profiles

    fig = branch_profiles({"AC": vm.loc[worst].reindex(range(1, 34)).to_numpy()}, (lo, hi),
                          f"{scenario.name}: voltage along each radial branch at the worst minute, "
                          f"{feeder['time'].loc[worst]:%Y-%m-%d %H:%M}")
    paths.append(_save(fig, out_dir / "voltage_profile_worst.png"))

    bat = rows_of(df, "battery")
    if len(bat):
        soc = bat.pivot(index="time_s", columns="entity", values="soc_frac")
        power = bat.pivot(index="time_s", columns="entity", values="p_kw")
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
        ax1.fill_between(t, soc.min(axis=1), soc.max(axis=1), alpha=0.25, label="range over batteries")
        ax1.plot(t, soc.mean(axis=1), label="mean")
        ax1.set_ylabel("state of charge (0..1)")
        ax1.set_ylim(-0.02, 1.02)
        ax1.legend(loc="best", fontsize=8)
        ax1.set_title(f"{scenario.name}: {soc.shape[1]} batteries, PMS cycle {scenario.batteries.pms_cycle_s} s")
        ax2.plot(t, power.sum(axis=1), label="fleet battery power (+ = charging)")
        ax2.axhline(0, color="k", lw=0.5)
        ax2.set_ylabel("kW")
        ax2.legend(loc="best", fontsize=8)
        fig.autofmt_xdate()
        paths.append(_save(fig, out_dir / "batteries.png"))
    if scenario.planner is not None and has_rows(df, "plan"):
        paths.append(_plot_plan(df, scenario, out_dir, t))
    market_table = (tables or {}).get("market")
    if scenario.market is not None and has_rows(df, "market") and market_table is not None:
        paths.append(_plot_market(df, scenario, out_dir, market_table))
        if len(bat):
            paths.append(_plot_three_households(df, scenario, out_dir))
    if has_rows(df, "contract") and "evm_round_gas" in rows_of(df, "contract").columns:
        paths.append(_plot_contract_gas(df, out_dir))
    return paths

def _plot_contract_gas(df: pd.DataFrame, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    c = rows_of(df, "contract")
    c = c[c["evm_round_gas"].notna()]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(c["time"].dt.tz_localize(None), c["evm_round_gas"] / 1e6, ".", ms=3, label="gas per round")
    ax.set_ylabel("gas per contract round (millions)")
    ax2 = ax.twinx()
    ax2.plot(c["time"].dt.tz_localize(None), c["evm_round_ms"], "x", ms=3, color="tab:red", label="EVM wall time")
    ax2.set_ylabel("EVM wall time per round (ms)", color="tab:red")
    ax.set_title("the smart contract on the EVM: gas and wall time of every round")
    fig.autofmt_xdate()
    return _save(fig, out_dir / "contract_gas.png")

def _plot_three_households(df: pd.DataFrame, scenario: Scenario, out_dir: Path) -> Path:
    """State of charge of three households with different assets over the run (Couraud et al. 2022, Fig. 6):
    the largest PV, the largest wind turbine, and the largest demand."""
    import matplotlib.pyplot as plt

    households = pd.read_csv(out_dir / "households.csv")
    batteries = pd.read_csv(out_dir / "batteries.csv", keep_default_na=False)
    owned = households[households["name"].isin(set(batteries["household"]))]
    picks: dict[str, str] = {}
    for label, col in (("largest PV", "pv_kwp"), ("largest wind", "wind_kw"), ("largest demand", "annual_kwh")):
        pool = owned[~owned["name"].isin(picks.values())]
        if col in pool and len(pool) and pool[col].max() > 0:
            picks[label] = str(pool.loc[pool[col].idxmax(), "name"])
    bat = rows_of(df, "battery")
    soc = bat.pivot(index="time_s", columns="entity", values="soc_frac")
    times = rows_of(df, "feeder").set_index("time_s").sort_index()["time"].dt.tz_localize(None)
    by_household = dict(zip(batteries["household"], batteries["name"]))
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, name in picks.items():
        ax.plot(times.loc[soc.index], soc[by_household[name]], label=f"{name} ({label})")
    target = rows_of(df, "market").set_index("time_s")["soc_target_frac"]
    ax.step(times.loc[target.index], target, where="post", color="k", ls="--", lw=1, label="SoC target (aggregator)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("state of charge")
    ax.set_title(f"{scenario.name}: three households' batteries")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, out_dir / "soc_three_households.png")

def _plot_market(df: pd.DataFrame | Recorded, scenario: Scenario, out_dir: Path, table: pd.DataFrame) -> Path:
    """Committed vs delivered export per interval (Couraud et al. 2022, Fig. 5c) and the prices; writes market.csv."""
    import matplotlib.pyplot as plt

    table.to_csv(out_dir / "market.csv", index=False)
    if table.empty:
        return out_dir / "market.csv"
    t = pd.to_datetime(table["interval_start"]).dt.tz_localize(None)
    assert scenario.market is not None
    width = pd.Timedelta(seconds=scenario.market.interval_s) * 0.8
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax1.bar(t, table["committed_kwh"], width=width, align="edge", color="tab:blue", alpha=0.5, label="committed")
    ax1.step(t, table["delivered_kwh"], where="post", color="tab:orange", lw=1.5, label="delivered (net export)")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_ylabel("kWh per interval")
    ax1.set_title(f"{scenario.name}: fleet export committed day-ahead vs delivered")
    ax1.legend(loc="best", fontsize=8)
    ax2.step(t, table["wholesale_per_kwh"] * 1000, where="post", label="wholesale (day-ahead)")
    ax2.step(t, table["imbalance_per_kwh"] * 1000, where="post", label="imbalance", alpha=0.7)
    ax2.set_ylabel("price per MWh")
    ax2.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, out_dir / "market.png")

def _plot_plan(df: pd.DataFrame, scenario: Scenario, out_dir: Path, t: pd.Series) -> Path:
    """Planned (LinDistFlow) vs AC voltage at the community buses, and planned vs executed battery power."""
    import matplotlib.pyplot as plt

    planned, ac, _ = plan_vs_ac(df)
    plan = rows_of(df, "plan")
    bat = rows_of(df, "battery").pivot(index="time_s", columns="bus", values="p_kw")
    set_kw = plan.pivot(index="time_s", columns="bus", values="p_set_kw")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, b in enumerate(planned.columns):
        c = colors[k % len(colors)]
        ax1.plot(t.values, ac[b].values, color=c, lw=0.8, alpha=0.8, label=f"bus {int(b)} AC")
        ax1.step(t.values, planned[b].values, where="post", color=c, lw=1.6, ls="--", label=f"bus {int(b)} plan")
        ax2.plot(t.values, bat[b].values, color=c, lw=0.8, alpha=0.8)
        ax2.step(t.values, set_kw[b].values, where="post", color=c, lw=1.6, ls="--", label=f"bus {int(b)}")
    for limit in (scenario.grid.v_min_pu, scenario.grid.v_max_pu):
        ax1.axhline(limit, color="tab:red", ls=":", lw=1)
    ax1.set_ylabel("voltage (pu)")
    ax1.set_title(f"{scenario.name}: community buses — plan (LinDistFlow, dashed) vs AC power flow (solid)")
    ax1.legend(ncol=4, fontsize=7, loc="best")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_ylabel("battery kW (+ = charging)")
    ax2.set_title("community batteries: hourly schedule (dashed) vs executed by the PMS (solid)")
    ax2.legend(ncol=6, fontsize=7, loc="best")
    fig.autofmt_xdate()
    return _save(fig, out_dir / "plan_vs_ac.png")

def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
