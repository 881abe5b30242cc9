"""The run's figures, drawn from its recorded rows: one function per figure, each returning a matplotlib figure
(None where the run has nothing to draw), named as the PNG it becomes in the run folder.

:func:`plot_all` writes every figure a run has; :class:`dercosim.Result` draws one on request
(``res.plot.voltage_envelope()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dercosim.analysis.results import Records, plan_vs_ac

if TYPE_CHECKING:
    from dercosim.scenarios.config import Scenario


@dataclass
class Drawn:
    """What a figure is drawn from: the recorded rows (:class:`Records`: the per-step kinds whole, the others
    reduced step by step), the scenario, the run folder (for ``households.csv`` and ``batteries.csv``) and the
    tables the summary computed (``"market"``: the settlement per interval)."""

    records: Records
    scenario: Scenario
    out_dir: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def feeder(self) -> pd.DataFrame:
        return self.records.whole("feeder").set_index("time_s").sort_index()

    @property
    def grid(self) -> Any:
        """The run's feeder (:class:`dercosim.grids.feeders.Feeder`)."""
        from dercosim.grids.feeders import load_feeder

        return load_feeder(self.scenario.grid.feeder)

    @property
    def times(self) -> pd.Series:
        """Local time of each step (naive, for matplotlib), indexed by ``time_s``."""
        return self.feeder["time"].dt.tz_localize(None)


def step_post(ax: Any, t: pd.Series | pd.DatetimeIndex, y: Any, width: pd.Timedelta, **kw: Any) -> Any:
    """A step curve whose every interval is drawn, the last included (``ax.step(where="post")`` stops at the
    last interval's start)."""
    t = pd.DatetimeIndex(t)
    y = np.asarray(y, dtype=float)
    if not len(t):
        return ax.step([], [], where="post", **kw)
    return ax.step(t.append(pd.DatetimeIndex([t[-1] + width])), np.append(y, y[-1]), where="post", **kw)


def voltage_envelope(d: Drawn) -> Any:
    """Min and max bus voltage per step (the slack buses, held at their set voltage, left out of both), with the
    limits; the steps with a bus outside them marked, and the steps whose power flow failed."""
    import matplotlib.pyplot as plt

    feeder, t = d.feeder, d.times
    slack = list(d.grid.slack_numbers)
    vm = d.records.vm.drop(columns=slack, errors="ignore")
    lo, hi = d.scenario.grid.v_min_pu, d.scenario.grid.v_max_pu
    vmin, vmax = vm.min(axis=1), vm.max(axis=1)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(t, vmin, vmax, color="tab:blue", alpha=0.25, label="range over buses")
    ax.plot(t, vmin, color="tab:blue", lw=1, label="min over buses")
    left_out = f"slack bus {slack[0]}" if len(slack) == 1 else f"{len(slack)} slack buses"
    ax.plot(t, vmax, color="tab:orange", lw=1, label=f"max over buses ({left_out} left out)")
    for limit in (lo, hi):
        ax.axhline(limit, color="tab:red", ls="--", lw=1)
    below, above = (vmin < lo).to_numpy(), (vmax > hi).to_numpy()
    if below.any():
        ax.plot(t[below], vmin[below], "v", color="tab:red", ms=3, label=f"below {lo} pu ({int(below.sum())} steps)")
    if above.any():
        ax.plot(t[above], vmax[above], "^", color="tab:red", ms=3, label=f"above {hi} pu ({int(above.sum())} steps)")
    failed = ~feeder["converged"].astype(bool)
    if failed.any():
        ax.plot(t[failed.values], np.full(failed.sum(), lo), "kx", label="power flow failed")
    ax.set_ylabel("voltage (pu)")
    ax.set_title(f"{d.scenario.name}: voltage envelope (limits {lo}–{hi} pu)")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return fig


def feeder_head_power(d: Drawn) -> Any:
    """Active power at the feeder head, the base load and the line losses."""
    import matplotlib.pyplot as plt

    feeder, t = d.feeder, d.times
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, feeder["p_head_kw"], label="feeder head P")
    ax.plot(t, feeder["base_p_kw"], lw=1, ls=":", label="base load P")
    ax.plot(t, feeder["losses_kw"], lw=1, label="line losses")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("kW (positive = drawn from upstream)")
    ax.set_title(f"{d.scenario.name}: feeder-head active power")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return fig


def voltage_profile_worst(d: Drawn) -> Any:
    """Voltage along each radial branch at the step furthest outside (or closest to) the limits."""
    from dercosim.analysis.validate import branch_profiles

    feeder = d.feeder
    vm = d.records.vm
    lo, hi = d.scenario.grid.v_min_pu, d.scenario.grid.v_max_pu
    deviation = np.maximum(lo - vm, vm - hi).max(axis=1).where(feeder["converged"].astype(bool).values)
    worst = deviation.idxmax() if deviation.notna().any() else vm.index[0]
    grid = d.grid
    return branch_profiles({"AC": vm.loc[worst].reindex(range(1, grid.n_bus + 1)).to_numpy()}, (lo, hi),
                           f"{d.scenario.name}: voltage along each radial branch at the worst minute, "
                           f"{feeder['time'].loc[worst]:%Y-%m-%d %H:%M}", grid)


def batteries(d: Drawn) -> Any:
    """The fleet's state-of-charge band and mean, and its total power."""
    import matplotlib.pyplot as plt

    if not d.records.has("battery"):
        return None
    t = d.times
    steps = d.records.battery_steps
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.fill_between(t, steps["soc_min"], steps["soc_max"], alpha=0.25, label="range over batteries")
    ax1.plot(t, steps["soc_mean"], label="mean")
    ax1.set_ylabel("state of charge (0..1)")
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(loc="best", fontsize=8)
    ax1.set_title(f"{d.scenario.name}: {int(steps['batteries'].max())} batteries, PMS cycle "
                  f"{d.scenario.batteries.pms_cycle_s} s")
    ax2.plot(t, steps["p_kw"], label="fleet battery power (+ = charging)")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_ylabel("kW")
    ax2.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return fig


def plan_vs_ac_figure(d: Drawn) -> Any:
    """Planned (LinDistFlow) vs AC voltage at the community buses, and planned vs executed battery power."""
    import matplotlib.pyplot as plt

    if d.scenario.planner is None or not d.records.has("plan"):
        return None
    t = d.times
    plan = d.records.whole("plan")
    planned, ac, _ = plan_vs_ac(plan, d.records.vm)
    bat = d.records.battery_p_by_bus
    set_kw = plan.pivot(index="time_s", columns="bus", values="p_set_kw")
    step = pd.Timedelta(seconds=d.scenario.clock.step_s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, b in enumerate(planned.columns):
        c = colors[k % len(colors)]
        ax1.plot(t.values, ac[b].values, color=c, lw=0.8, alpha=0.8, label=f"bus {int(b)} AC")
        step_post(ax1, t, planned[b].values, step, color=c, lw=1.6, ls="--", label=f"bus {int(b)} plan")
        ax2.plot(t.values, bat[b].values, color=c, lw=0.8, alpha=0.8)
        step_post(ax2, t, set_kw[b].values, step, color=c, lw=1.6, ls="--", label=f"bus {int(b)}")
    for limit in (d.scenario.grid.v_min_pu, d.scenario.grid.v_max_pu):
        ax1.axhline(limit, color="tab:red", ls=":", lw=1)
    ax1.set_ylabel("voltage (pu)")
    ax1.set_title(f"{d.scenario.name}: community buses — plan (LinDistFlow, dashed) vs AC power flow (solid)")
    ax1.legend(ncol=4, fontsize=7, loc="best")
    ax2.axhline(0, color="k", lw=0.5)
    ax2.set_ylabel("battery kW (+ = charging)")
    ax2.set_title("community batteries: hourly schedule (dashed) vs executed by the PMS (solid)")
    ax2.legend(ncol=6, fontsize=7, loc="best")
    fig.autofmt_xdate()
    return fig


def market(d: Drawn) -> Any:
    """Committed vs delivered export per interval (Couraud et al. 2022, Fig. 5c) and the prices."""
    import matplotlib.pyplot as plt

    table = d.tables.get("market")
    if d.scenario.market is None or table is None or table.empty:
        return None
    t = pd.to_datetime(table["interval_start"]).dt.tz_localize(None)
    interval = pd.Timedelta(seconds=d.scenario.market.interval_s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    ax1.bar(t, table["committed_kwh"], width=interval * 0.8, align="edge", color="tab:blue", alpha=0.5,
            label="committed")
    step_post(ax1, t, table["delivered_kwh"], interval, color="tab:orange", lw=1.5, label="delivered (net export)")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_ylabel("kWh per interval")
    ax1.set_title(f"{d.scenario.name}: fleet export committed day-ahead vs delivered")
    ax1.legend(loc="best", fontsize=8)
    currency = d.scenario.tariff.currency
    step_post(ax2, t, table["wholesale_per_kwh"] * 1000, interval, label="wholesale (day-ahead)")
    step_post(ax2, t, table["imbalance_per_kwh"] * 1000, interval, label="imbalance", alpha=0.7)
    ax2.set_ylabel(f"{currency} per MWh")
    ax2.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return fig


def soc_three_households(d: Drawn) -> Any:
    """State of charge of three households with different assets over the run (Couraud et al. 2022, Fig. 6):
    the largest PV, the largest wind turbine, and the largest demand; with the aggregator's SoC target."""
    import matplotlib.pyplot as plt

    if d.scenario.market is None or not d.records.has("market") or not d.records.has("battery"):
        return None
    soc = d.records.battery_soc
    times = d.times
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, battery in d.records.soc_picks.items():
        ax.plot(times.loc[soc.index], soc[battery], label=label)
    target = d.records.whole("market").set_index("time_s").sort_index()["soc_target_frac"]
    step_post(ax, times.loc[target.index], target, pd.Timedelta(seconds=d.scenario.clock.step_s), color="k",
              ls="--", lw=1, label="SoC target (aggregator)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("state of charge")
    ax.set_title(f"{d.scenario.name}: three households' batteries")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return fig


def contract_gas(d: Drawn) -> Any:
    """Gas and EVM wall time of every contract round (``[contract] engine = "evm"``)."""
    import matplotlib.pyplot as plt

    c = d.records.whole("contract")
    if not len(c) or "evm_round_gas" not in c.columns:
        return None
    c = c[c["evm_round_gas"].notna()]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    gas = ax.plot(c["time"].dt.tz_localize(None), c["evm_round_gas"] / 1e6, ".", ms=3, label="gas per round")
    ax.set_ylabel("gas per contract round (millions)")
    ax2 = ax.twinx()
    wall = ax2.plot(c["time"].dt.tz_localize(None), c["evm_round_ms"], "x", ms=3, color="tab:red",
                    label="EVM wall time per round")
    ax2.set_ylabel("EVM wall time per round (ms)", color="tab:red")
    ax.legend(handles=gas + wall, loc="best", fontsize=8)
    ax.set_title("the smart contract on the EVM: gas and wall time of every round")
    fig.autofmt_xdate()
    return fig


#: every figure of a run, by the name of its PNG in the run folder
PLOTS: dict[str, Callable[[Drawn], Any]] = {
    "voltage_envelope": voltage_envelope,
    "feeder_head_power": feeder_head_power,
    "voltage_profile_worst": voltage_profile_worst,
    "batteries": batteries,
    "plan_vs_ac": plan_vs_ac_figure,
    "market": market,
    "soc_three_households": soc_three_households,
    "contract_gas": contract_gas,
}


def write_tables(tables: dict[str, pd.DataFrame] | None, out_dir: str | Path) -> list[Path]:
    """The per-interval tables the summary computed, as CSV (``market.csv``)."""
    paths = []
    if tables and tables.get("market") is not None:
        path = Path(out_dir) / "market.csv"
        tables["market"].to_csv(path, index=False)
        paths.append(path)
    return paths


def plot_all(records: Records, scenario: Scenario, out_dir: str | Path,
             tables: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Write every figure of :data:`PLOTS` the run has to ``out_dir`` as PNG; returns their paths. ``tables``:
    what :func:`~dercosim.analysis.summary.summarize` computed."""
    import matplotlib

    matplotlib.use("Agg")
    drawn = Drawn(records, scenario, Path(out_dir), dict(tables or {}))
    paths = []
    for name, draw in PLOTS.items():
        fig = draw(drawn)
        if fig is not None:
            paths.append(save(fig, drawn.out_dir / f"{name}.png"))
    return paths


def save(fig: Any, path: Path) -> Path:
    """Lay out, write (110 dpi) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
