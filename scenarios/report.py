"""Summary figures and plots of a run, computed from its ``timeseries.parquet``.

Everything in ``summary.json`` except wall times is derived from the
recorded rows, so the summary and the parquet file cannot disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dercosim.scenarios import fleet
from dercosim.scenarios.config import Scenario
from dercosim.sims.recorder import KIND_COLUMNS_KEY


BASE_COLUMNS = ["time_s", "time", "entity", "kind", "bus"]


class Recorded(dict):
    """A run's recorded rows split by kind (``"household"`` → its rows), each with only the columns recorded for
    that kind: what the report reads instead of the whole long table, whose other kinds' columns are all NaN
    (at 2,000 households for a day, 8.6 M rows × 85 columns, mostly empty). Row order within a kind is the
    file's."""

    columns: list[str]


def read_recorded(path: str | Path) -> Recorded:
    """``timeseries.parquet`` as :class:`Recorded`, one kind at a time (the file is never read whole)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    meta = (schema.metadata or {}).get(KIND_COLUMNS_KEY)
    kinds = pq.read_table(path, columns=["kind"], read_dictionary=["kind"]).column("kind").unique().to_pylist()
    per_kind = json.loads(meta) if meta else {}
    recorded = Recorded()
    recorded.columns = list(schema.names)
    for kind in kinds:
        wanted = per_kind.get(kind)
        columns = (BASE_COLUMNS + [c for c in schema.names if c in set(wanted) and c not in BASE_COLUMNS]
                   if wanted is not None else None)  # a file without the metadata: every column
        recorded[kind] = pq.read_table(path, columns=columns, filters=[("kind", "==", kind)]).to_pandas()
    return recorded


def _of(df: pd.DataFrame | Recorded, kind: str) -> pd.DataFrame:
    """The rows of ``kind`` (an empty frame with every column if there are none)."""
    if isinstance(df, pd.DataFrame):
        return df[df.kind == kind]
    found = df.get(kind)
    return found if found is not None else pd.DataFrame(columns=df.columns)


def _has(df: pd.DataFrame | Recorded, kind: str) -> bool:
    return bool((df.kind == kind).any()) if isinstance(df, pd.DataFrame) else len(df.get(kind, ())) > 0


def _voltages(df: pd.DataFrame) -> pd.DataFrame:
    """vm_pu per step (rows, ``time_s``) and bus (columns, 1-based)."""
    return _of(df, "bus").pivot(index="time_s", columns="bus", values="vm_pu").sort_index(axis=1)


def _num(x: float) -> float | None:
    """JSON-safe number: NaN becomes null."""
    return None if pd.isna(x) else float(x)


def _if(known: bool, x: float) -> float | None:
    """``x`` as a float when it is known, else null."""
    return float(x) if known else None


def _at(times: pd.Series, time_s: int) -> str:
    return str(times.loc[time_s])


def summarize(df: pd.DataFrame | Recorded, scenario: Scenario, households: pd.DataFrame, batteries: pd.DataFrame,
              wall_time_s: float, run_wall_s: float, tables: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """The figures of ``summary.json`` from a run's recorded rows (:func:`read_recorded`, or the whole
    ``pd.read_parquet(timeseries.parquet)``).

    ``tables``: if given, receives the per-interval market settlement (``"market"``) for :func:`plot_all`,
    so it is computed once per run."""
    step_h = scenario.clock.step_s / 3600.0
    feeder = _of(df, "feeder").set_index("time_s").sort_index()
    stamps = feeder["time"]
    vm = _voltages(df)
    lo, hi = scenario.grid.v_min_pu, scenario.grid.v_max_pu

    converged = feeder["converged"].astype(bool)
    any_ok = bool(converged.any())
    below = (vm < lo).any(axis=1)
    above = (vm > hi).any(axis=1)
    step_min = scenario.clock.step_s / 60.0
    stacked = vm.stack()  # NaN (failed) steps drop out
    if len(stacked):
        (t_min, b_min), (t_max, b_max) = stacked.idxmin(), stacked.idxmax()
        extremes = {"min_pu": float(stacked.min()), "min_bus": int(b_min), "min_at": _at(stamps, t_min),
                    "max_pu": float(stacked.max()), "max_bus": int(b_max), "max_at": _at(stamps, t_max)}
    else:  # no power flow converged
        extremes = {k: None for k in ("min_pu", "min_bus", "min_at", "max_pu", "max_bus", "max_at")}

    hh = _of(df, "household")
    p_head = feeder["p_head_kw"]
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "start": str(stamps.iloc[0]),
        "end": str(stamps.iloc[-1] + pd.Timedelta(seconds=scenario.clock.step_s)),
        "step_s": scenario.clock.step_s,
        "steps": int(len(feeder)),
        "wall_time_s": round(wall_time_s, 3),
        "run_wall_time_s": round(run_wall_s, 3),
        "ms_per_step": round(1000.0 * run_wall_s / max(len(feeder), 1), 3),
        "powerflow": {
            "engine": scenario.grid.engine,
            "solves": int(len(feeder)),
            "failures": int((~converged).sum()),
            "failed_at": [_at(stamps, t) for t in feeder.index[~converged][:20]],
        },
        "voltage": {
            "limits_pu": [lo, hi],
            **extremes,
            # over converged steps; null when none converged (nothing is known, not "0 minutes")
            "minutes_outside_limits": _if(any_ok, ((below | above) & converged).sum() * step_min),
            "minutes_below_min": _if(any_ok, (below & converged).sum() * step_min),
            "minutes_above_max": _if(any_ok, (above & converged).sum() * step_min),
            "per_bus": {int(b): {"min_pu": _num(vm[b].min()), "max_pu": _num(vm[b].max())} for b in vm.columns},
        },
        "energy_kwh": {
            "line_losses": _if(any_ok, feeder["losses_kw"].sum() * step_h),
            "feeder_head_import": _if(any_ok, p_head.clip(lower=0).sum() * step_h),
            "feeder_head_export": _if(any_ok, (-p_head).clip(lower=0).sum() * step_h),
            "feeder_head_net": _if(any_ok, p_head.sum() * step_h),
            "base_load": float(feeder["base_p_kw"].sum() * step_h),
            "note": "sums over converged steps; a failed power flow contributes nothing; null when none converged",
        },
        "households": {
            "count": int(len(households)),
            "with_pv": int((households["pv_kwp"] > 0).sum()) if len(households) else 0,
            "pv_kwp_total": float(households["pv_kwp"].sum()) if len(households) else 0.0,
            "load_kwh": float(hh["load_kw"].sum() * step_h),
            "pv_kwh": float(hh["pv_kw"].sum() * step_h),
        },
    }
    summary["households"].update(_household_economics(df, scenario, households, batteries, stamps))
    if len(batteries):
        summary["batteries"] = _battery_figures(df, scenario, batteries)
    if scenario.hems.controller is not None:
        summary["hems"] = {"controller": scenario.hems.controller, "params": scenario.hems.params,
                           "applies_to": scenario.hems.applies_to, **_controller_figures(df)}
    if scenario.planner is not None:
        summary["planner"] = _planner_figures(df, scenario)
    if scenario.contract is not None:
        c = _of(df, "contract").sort_values("time_s")
        last = c.iloc[-1] if len(c) else None
        summary["contract"] = {
            "engine": scenario.contract.engine, "interval_s": scenario.contract.interval_s,
            "members": len(fleet.contract_members(scenario, households, batteries)),
            "meters": len(fleet.contract_meters(scenario, households, batteries)),
            **{k: (int(last[k]) if last is not None else 0)
               for k in ("contract_rounds", "reports_late", "reports_lost", "replies_lost", "contract_rejected")},
            "note": "members = battery households (weights and RE); meters = the portfolio's other meters (plants, "
                    "households without a battery), whose exports count in RE; "
                    "late = a report that arrived after its round closed (used in the next round); lost = dropped by "
                    "the network; a member whose reply is lost keeps its last RE and weights; rejected = reports "
                    "the contract refused (treated as lost)"}
    if scenario.market is not None and len(households):
        summary["market"], market_table = market_figures(df, scenario, households, batteries)
        if tables is not None:
            tables["market"] = market_table
        hh_summary = summary["households"]
        bills = summary["market"].pop("bills_per_household")
        for name, bill in bills.items():
            hh_summary["per_household"][name]["bill"] = bill
        if bills:
            hh_summary["bill_total"] = summary["market"]["bill_total"]
        hh_summary["definitions"] += ("; bills include the virtual private wire (market.vpw_share of the import "
                                      "price for energy the fleet exported that minute); the aggregator's plants "
                                      "are not billed")
    if scenario.grid.line_max_i_ka is not None:
        summary["lines"] = {"rating_ka": scenario.grid.line_max_i_ka,
                            "max_loading_pct": float(feeder["line_loading_max_pct"].max())}
    return summary


def plot_all(df: pd.DataFrame | Recorded, scenario: Scenario, out_dir: str | Path,
             tables: dict[str, pd.DataFrame] | None = None) -> list[Path]:
    """Write the run's PNG plots (from its recorded rows) to ``out_dir``; returns their paths. ``tables``: what
    :func:`summarize` already computed (else computed here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    feeder = _of(df, "feeder").set_index("time_s").sort_index()
    t = feeder["time"].dt.tz_localize(None)
    vm = _voltages(df)
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
    from dercosim.scenarios.validate import branch_profiles

    fig = branch_profiles({"AC": vm.loc[worst].reindex(range(1, 34)).to_numpy()}, (lo, hi),
                          f"{scenario.name}: voltage along each radial branch at the worst minute, "
                          f"{feeder['time'].loc[worst]:%Y-%m-%d %H:%M}")
    paths.append(_save(fig, out_dir / "voltage_profile_worst.png"))

    bat = _of(df, "battery")
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
    if scenario.planner is not None and _has(df, "plan"):
        paths.append(_plot_plan(df, scenario, out_dir, t))
    if scenario.market is not None and _has(df, "market"):
        paths.append(_plot_market(df, scenario, out_dir, (tables or {}).get("market")))
        if len(bat):
            paths.append(_plot_three_households(df, scenario, out_dir))
    if _has(df, "contract") and "evm_round_gas" in _of(df, "contract").columns:
        paths.append(_plot_contract_gas(df, out_dir))
    return paths


#: Couraud et al. 2022: gas of one household's transaction on their private chain
PAPER_GAS_PER_HOUSEHOLD_TX = 105_957


def evm_figures(df: pd.DataFrame | Recorded, gas_log: Path) -> dict[str, Any]:
    """Gas and wall time of the contract on the EVM, and its largest gap to the Python rules (summary.json)."""
    c = _of(df, "contract")
    figures: dict[str, Any] = {}
    try:
        log = json.loads(Path(gas_log).read_text(encoding="utf-8"))["summary"]
        figures.update({k: log[k] for k in ("fork", "mode", "deploy_gas", "register_gas_median", "household_tx_gas",
                                            "round_gas", "round_wall_ms", "rejected_on_chain", "failed_rounds")})
    except (OSError, ValueError, KeyError) as exc:
        figures["gas_log_error"] = f"{gas_log}: {exc}"
    figures["weight_diff_max_vs_python"] = _num(c["evm_weight_diff_max"].max()) if len(c) else None
    figures["re_diff_max_vs_python_kwh"] = _num(c["evm_re_diff_kwh"].max()) if len(c) else None
    figures["paper_gas_per_household_tx"] = PAPER_GAS_PER_HOUSEHOLD_TX
    figures["note"] = ("failed_rounds: the round's transaction reverted and the Python rules' replies were sent; "
                       "round_gas: every transaction of a round (the households' updates and the aggregator's "
                       "compute, or the one batch; the first round of an interval also carries start_interval and "
                       "set_series); differences vs python: the Python rules on the same rounded inputs "
                       "(SoC and weights in ppm, energy in mWh)")
    return figures


def _plot_contract_gas(df: pd.DataFrame, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    c = _of(df, "contract")
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
    bat = _of(df, "battery")
    soc = bat.pivot(index="time_s", columns="entity", values="soc_frac")
    times = _of(df, "feeder").set_index("time_s").sort_index()["time"].dt.tz_localize(None)
    by_household = dict(zip(batteries["household"], batteries["name"]))
    fig, ax = plt.subplots(figsize=(10, 4))
    for label, name in picks.items():
        ax.plot(times.loc[soc.index], soc[by_household[name]], label=f"{name} ({label})")
    target = _of(df, "market").set_index("time_s")["soc_target_frac"]
    ax.step(times.loc[target.index], target, where="post", color="k", ls="--", lw=1, label="SoC target (aggregator)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("state of charge")
    ax.set_title(f"{scenario.name}: three households' batteries")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, out_dir / "soc_three_households.png")


def _plot_market(df: pd.DataFrame, scenario: Scenario, out_dir: Path, table: pd.DataFrame | None = None) -> Path:
    """Committed vs delivered export per interval (Couraud et al. 2022, Fig. 5c) and the prices; writes market.csv."""
    import matplotlib.pyplot as plt

    if table is None:
        households = pd.read_csv(out_dir / "households.csv")
        batteries = pd.read_csv(out_dir / "batteries.csv", keep_default_na=False)
        _, table = market_figures(df, scenario, households, batteries)
    table.to_csv(out_dir / "market.csv", index=False)
    if table.empty:
        return out_dir / "market.csv"
    t = pd.to_datetime(table["interval_start"]).dt.tz_localize(None)
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

    planned, ac, _ = _plan_vs_ac(df)
    plan = _of(df, "plan")
    bat = _of(df, "battery").pivot(index="time_s", columns="bus", values="p_kw")
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


def meter_kw(df: pd.DataFrame, batteries: pd.DataFrame) -> pd.DataFrame:
    """Net power at each household's meter (rows ``time_s``, columns household), after its battery if any."""
    hh = _of(df, "household").pivot(index="time_s", columns="entity", values="net_kw")
    linked = batteries[batteries["household"] != ""] if len(batteries) else batteries
    if len(linked):
        bat = _of(df, "battery").pivot(index="time_s", columns="entity", values="meter_kw").reindex(hh.index)
        # one array, not a column at a time: a frame assigned 2,000 columns one by one keeps 2,000 blocks and
        # every later operation on it walks them (seconds at fleet scale)
        values = np.array(hh.to_numpy(dtype=float), order="F")  # column-major, as before: bills (matrix products) to the bit
        values[:, hh.columns.get_indexer(linked["household"])] = bat[list(linked["name"])].to_numpy(dtype=float)
        hh = pd.DataFrame(values, index=hh.index, columns=hh.columns)
    return hh


def _household_economics(df: pd.DataFrame, scenario: Scenario, households: pd.DataFrame, batteries: pd.DataFrame,
                         stamps: pd.Series) -> dict[str, Any]:
    """Self-consumption, self-sufficiency and bills per household and for the fleet."""
    from dercosim.timeseries.tariffs import tariff_of

    if not len(households):
        return {}
    step_h = scenario.clock.step_s / 3600.0
    hh = _of(df, "household")
    meter = meter_kw(df, batteries)
    names = list(households["name"])
    meter = meter[names]
    load = hh.pivot(index="time_s", columns="entity", values="load_kw")[names]
    hvac = hh.pivot(index="time_s", columns="entity", values="hvac_kw")[names].fillna(0.0)
    pv = hh.pivot(index="time_s", columns="entity", values="pv_kw")[names]
    if "wind_kw" in hh:  # on-site generation: PV and small wind
        pv = pv + hh.pivot(index="time_s", columns="entity", values="wind_kw")[names].fillna(0.0)
    demand_kwh = (load + hvac).sum() * step_h
    pv_kwh = pv.sum() * step_h
    import_kwh = meter.clip(lower=0).sum() * step_h
    export_kwh = (-meter).clip(lower=0).sum() * step_h
    tariff = tariff_of(scenario)
    times = pd.DatetimeIndex(stamps.loc[meter.index])
    bills = pd.Series(tariff.bill(times, meter.to_numpy(), step_h), index=names)
    with np.errstate(invalid="ignore", divide="ignore"):
        self_consumption = (pv_kwh - export_kwh).clip(lower=0) / pv_kwh
        self_sufficiency = (demand_kwh - import_kwh) / demand_kwh
    per = {n: {"bus": int(b), "demand_kwh": float(demand_kwh[n]), "pv_kwh": float(pv_kwh[n]),
               "import_kwh": float(import_kwh[n]), "export_kwh": float(export_kwh[n]),
               "self_consumption": None if pv_kwh[n] <= 0 else float(self_consumption[n]),
               "self_sufficiency": float(self_sufficiency[n]), "bill": float(bills[n])}
           for n, b in zip(names, households["bus"])}
    fleet_pv = float(pv_kwh.sum())
    return {
        "hvac_kwh": float(hvac.sum().sum() * step_h),
        "meter_import_kwh": float(import_kwh.sum()),
        "meter_export_kwh": float(export_kwh.sum()),
        "self_consumption": float(max(fleet_pv - export_kwh.sum(), 0.0) / fleet_pv) if fleet_pv > 0 else None,
        "self_sufficiency": float((demand_kwh.sum() - import_kwh.sum()) / demand_kwh.sum()),
        "bill_total": float(bills.sum()),
        "currency": tariff.currency,
        "definitions": "self_consumption = (PV + wind - export)/(PV + wind); self_sufficiency = (demand - import)/demand, "
                       "demand = load + HVAC; import/export at the meter after the battery",
        "per_household": per,
    }


def _battery_figures(df: pd.DataFrame, scenario: Scenario, batteries: pd.DataFrame) -> dict[str, Any]:
    bat = _of(df, "battery")
    sums = bat.groupby("entity")[["e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh", "e_clipped_kwh"]].sum()
    last_soc = bat.sort_values("time_s").groupby("entity")["soc_kwh"].last()
    table = batteries.set_index("name")
    sums = sums.loc[table.index]
    closure = (last_soc.loc[table.index] - table["soc_init_kwh"]) - (
        table["eta_charge"] * sums["e_charge_kwh"] - sums["e_discharge_kwh"] / table["eta_discharge"]
        - sums["e_self_discharge_kwh"])
    cycles = sums["e_discharge_kwh"] / table["capacity_kwh"]
    return {
        "count": int(len(table)),
        "pms_cycle_s": scenario.batteries.pms_cycle_s,
        "subminute_sigma_kw": scenario.batteries.subminute_sigma_kw,
        "charged_kwh": float(sums["e_charge_kwh"].sum()),
        "discharged_kwh": float(sums["e_discharge_kwh"].sum()),
        "self_discharge_kwh": float(sums["e_self_discharge_kwh"].sum()),
        "clipped_kwh": float(sums["e_clipped_kwh"].sum()),
        "throughput_kwh": float(sums["e_charge_kwh"].sum() + sums["e_discharge_kwh"].sum()),
        "equivalent_full_cycles_mean": float(cycles.mean()),
        "energy_balance_max_error_kwh": float(closure.abs().max()),
        "per_battery": {n: {"household": table.loc[n, "household"] or None, "bus": int(table.loc[n, "bus"]),
                            "soc_start_kwh": float(table.loc[n, "soc_init_kwh"]),
                            "soc_end_kwh": float(last_soc[n]),
                            "charged_kwh": float(sums.loc[n, "e_charge_kwh"]),
                            "discharged_kwh": float(sums.loc[n, "e_discharge_kwh"]),
                            "clipped_kwh": float(sums.loc[n, "e_clipped_kwh"]),
                            "equivalent_full_cycles": float(cycles[n])} for n in table.index},
    }


def _plan_vs_ac(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per community bus: planned voltage (hourly, LinDistFlow) and AC voltage (minute), on the minute index."""
    plan = _of(df, "plan")
    planned = plan.pivot(index="time_s", columns="bus", values="plan_vm_pu")
    ac = _voltages(df)[planned.columns]
    ac_hourly = ac.groupby(ac.index // 3600).transform("mean")
    return planned, ac, ac_hourly


def _planner_figures(df: pd.DataFrame, scenario: Scenario) -> dict[str, Any]:
    """The value-stacking plans (Jiang & Wang 2024) and how their LinDistFlow voltages compare with AC."""
    op = _of(df, "planner").sort_values("time_s")
    plan = _of(df, "plan")
    planned, ac, ac_hourly = _plan_vs_ac(df)
    diff = (ac_hourly - planned).where(planned.notna())
    step_h = scenario.clock.step_s / 3600.0
    bat = _of(df, "battery").pivot(index="time_s", columns="bus", values="p_kw")
    set_kw = plan.pivot(index="time_s", columns="bus", values="p_set_kw")
    tracked = (bat[set_kw.columns] - set_kw).abs()
    last = op.iloc[-1] if len(op) else None
    per_plan = op.drop_duplicates("plans") if len(op) else op
    return {
        "kind": scenario.planner.kind,
        "mode": scenario.planner.admm.mode,
        "replan": scenario.planner.replan,
        "plans": int(last["plans"]) if last is not None else 0,
        "fallbacks": int(last["plan_fallback"]) if last is not None else 0,
        "not_converged": int((per_plan["admm_converged"] == 0).sum()),
        "admm_iterations": [int(v) for v in per_plan["admm_iterations"].fillna(0)],
        "admm_time_to_decision_s": [_num(v) for v in per_plan["admm_time_to_decision_s"]],
        "admm_wall_s": [_num(v) for v in per_plan["admm_wall_s"]],
        "gap_to_centralised_pct": [_num(v) for v in per_plan["admm_gap_pct"]],
        "plan_cost": [_num(v) for v in per_plan["plan_cost"]],
        "centralised_cost": [_num(v) for v in per_plan["central_cost"]],
        "currency": scenario.tariff.currency,
        "binaries_fixed": [int(v) for v in per_plan["plan_fixed"].fillna(0)],
        "complementarity_violations_left": [int(v) for v in per_plan["plan_violations_left"].fillna(0)],
        "planned_energy_kwh": {
            name: float(plan[f"plan_{name}_kw"].sum() * step_h) for name in ("p_grid", "p_b2b", "p_b2g", "p_ets",
                                                                               "p_etb", "p_feed")},
        "battery_setpoint_tracking_max_kw": _num(tracked.max().max()),
        "voltage_plan_vs_ac": {
            "form": "LinDistFlow squared-voltage form (Baran & Wu 1989) vs AC power flow, hourly means",
            "max_abs_diff_pu": _num(diff.abs().max().max()),
            "mean_diff_pu": _num(diff.stack().mean()),
            "note": "diff = AC − plan; negative: the plan overestimated the voltage",
            "per_bus": {int(b): {"max_abs_diff_pu": _num(diff[b].abs().max()), "ac_min_pu": _num(ac[b].min()),
                                 "plan_min_pu": _num(planned[b].min())} for b in planned.columns},
        },
    }


def market_figures(df: pd.DataFrame, scenario: Scenario, households: pd.DataFrame,
                   batteries: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    """The aggregator's bids, commitments, delivery and settlement from the recorded rows; and the per-interval
    table of ``market.csv``."""
    from dercosim.controllers.market import settle
    from dercosim.timeseries.tariffs import tariff_of

    m = scenario.market
    step_h = scenario.clock.step_s / 3600.0
    steps = m.interval_s // scenario.clock.step_s
    agg = _of(df, "market").set_index("time_s").sort_index()
    meter = meter_kw(df, batteries)
    from dercosim.scenarios.fleet import portfolio

    central, billed = portfolio(scenario, households)
    outside = [n for n in households["name"] if n not in central and n not in billed]
    n_int = len(meter) // steps
    if n_int == 0:  # shorter than one market interval: nothing to settle
        return {"intervals": 0, "note": "the run is shorter than one market interval; nothing was settled",
                "bill_total": None, "bills_per_household": {}}, pd.DataFrame()
    minutes = n_int * steps
    meter = meter.iloc[:minutes]
    stamps = _of(df, "feeder").set_index("time_s").sort_index()["time"].iloc[:minutes]
    times = pd.DatetimeIndex(stamps)
    tariff = tariff_of(scenario)
    first = agg.iloc[::steps].iloc[:n_int]
    st = settle(meter[billed].to_numpy(), meter[central].to_numpy() if central else np.zeros((minutes, 0)),
                first["committed_kwh"].to_numpy(), first["wholesale_per_kwh"].to_numpy(),
                first["imbalance_per_kwh"].to_numpy(), tariff.import_price(times), tariff.export_price(times),
                step_h, steps, m.vpw_share, m.imbalance_rule)
    table = pd.DataFrame({
        "interval_start": first["time"].to_numpy(), "bid_kwh": first["bid_kwh"].to_numpy(),
        "committed_kwh": st.committed_kwh, "delivered_kwh": st.delivered_kwh, "imbalance_kwh": st.imbalance_kwh,
        "forecast_net_export_kwh": first["forecast_net_export_kwh"].to_numpy(),
        "wholesale_per_kwh": first["wholesale_per_kwh"].to_numpy(),
        "imbalance_per_kwh": first["imbalance_per_kwh"].to_numpy(), "revenue": st.revenue,
        "imbalance_cost": st.imbalance_cost, "soc_target_frac": first["soc_target_frac"].to_numpy(),
        "mode_s": first["mode_s"].to_numpy(), "planned_battery_kwh": first["planned_battery_kwh"].to_numpy()})
    committed = st.committed_kwh > 1e-9
    bills_outside = tariff.bill(times, meter[outside].to_numpy(), step_h) if outside else np.zeros(0)
    homes = billed + outside  # every household, in the portfolio or not
    imports = meter[homes].clip(lower=0)
    hh = _of(df, "household")
    load = hh.pivot(index="time_s", columns="entity", values="load_kw")[homes].iloc[:minutes]
    consumed_kwh = float(load.sum().sum() * step_h)
    self_consumed = consumed_kwh - float(imports.sum().sum() * step_h)  # met by own generation and battery
    summary = {
        "wholesale": m.wholesale, "imbalance": m.imbalance, "imbalance_rule": m.imbalance_rule,
        "clearing": m.clearing, "residual_demand_slope": m.residual_demand_slope,
        "interval_s": m.interval_s, "intervals": int(n_int), "currency": tariff.currency,
        "milp_failures": int(agg["milp_failures"].max()) if len(agg) else 0,
        "bid_kwh": float(table["bid_kwh"].sum()), "committed_kwh": float(st.committed_kwh.sum()),
        "delivered_kwh": float(st.delivered_kwh.sum()),
        "wholesale_revenue": float(st.revenue.sum()), "imbalance_cost": float(st.imbalance_cost.sum()),
        "imbalance_kwh_abs": float(np.abs(st.imbalance_kwh).sum()),
        "mean_abs_deviation_of_committed": (float(np.mean(np.abs(st.imbalance_kwh[committed])
                                                          / st.committed_kwh[committed])) if committed.any()
                                            else None),
        "market_revenue_net": float(st.revenue.sum() - st.imbalance_cost.sum()),
        "bill_total": float(st.bills.sum() + bills_outside.sum()), "vpw_kwh": float(st.vpw_kwh.sum()),
        "households_in_portfolio": len(billed), "households_outside": len(outside),
        "self_consumption_rate": self_consumed / consumed_kwh if consumed_kwh > 0 else None,
        "self_supplied_minutes_share": float((imports <= 1e-9).to_numpy().mean()),
        "definitions": "delivered = export − import of the portfolio (household meters after batteries and the "
                       "aggregator's plants) per interval; revenue on the committed volume at the wholesale price; "
                       "imbalance cost |delivered − committed| × imbalance price (or GB single price); "
                       "self_consumption_rate = energy self-consumed (consumed − imported) / energy consumed "
                       "(households); "
                       "self_supplied_minutes_share = household-minutes without import",
        "bills_per_household": {**{n: float(b) for n, b in zip(billed, st.bills)},
                                **{n: float(b) for n, b in zip(outside, bills_outside)}},
    }
    return summary, table


def _controller_figures(df: pd.DataFrame) -> dict[str, Any]:
    """Faults, overruns, call times, and (MPC) solves and fallbacks per household, from the recorded rows."""
    ctrl = _of(df, "controller")
    if not len(ctrl):
        return {}
    per: dict[str, dict[str, Any]] = {}
    has_solves = "solve_ms" in ctrl.columns and ctrl["solve_ms"].notna().any()
    # whole columns grouped once (a loop over 2,000 households' groups took seconds)
    groups = ctrl.groupby("entity", sort=True)
    zeros = pd.Series(0, index=list(groups.groups))
    counted = lambda col: ctrl[col].fillna(0).groupby(ctrl["entity"]).sum() if col in ctrl else zeros  # noqa: E731
    faults, overruns = counted("fault"), counted("overrun")
    step_max = groups["step_ms"].max() if "step_ms" in ctrl else zeros * np.nan
    if has_solves:
        solves = groups["solve_ms"].agg(["count", "mean", "max"])
        fallbacks, retried = counted("fallback"), counted("retried")
    for entity in zeros.index:
        entry: dict[str, Any] = {"faults": int(faults[entity]), "overruns": int(overruns[entity]),
                                 "step_ms_max": _num(step_max[entity])}
        if has_solves:
            n = int(solves.at[entity, "count"])
            entry.update({
                "solves": n,
                "solve_ms_mean": float(solves.at[entity, "mean"]) if n else None,
                "solve_ms_max": float(solves.at[entity, "max"]) if n else None,
                "fallbacks": int(fallbacks[entity]),
                "retried": int(retried[entity]),
            })
        per[entity.removeprefix("ctrl_")] = entry
    out: dict[str, Any] = {
        "faults": int(sum(v["faults"] for v in per.values())),
        "overruns": int(sum(v["overruns"] for v in per.values())),
        "step_ms_max": _num(ctrl["step_ms"].max()) if "step_ms" in ctrl else None,
    }
    notes = ["fault = the controller raised, exited or returned a non-finite setpoint and the fallback was used "
             "for that step (hems.on_fault = 'fallback'); overrun = a call over hems.step_timeout_s"]
    if has_solves:
        all_ms = ctrl["solve_ms"].dropna()
        out.update({"solves": int(len(all_ms)), "solve_ms_mean": float(all_ms.mean()),
                    "solve_ms_max": float(all_ms.max()),
                    "fallbacks": int(sum(v["fallbacks"] for v in per.values())),
                    "retried": int(sum(v["retried"] for v in per.values()))})
        notes.append("fallback = the solver failed and the rule-based action was used for that step; "
                     "retried = the primary QP solver (PIQP by default) failed and qpOASES answered")
    out["note"] = "; ".join(notes)
    out["per_household"] = per
    return out
