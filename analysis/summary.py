"""The figures of ``summary.json``, computed from a run's recorded rows.

Everything except wall times is derived from the recorded rows, so the summary and the parquet file cannot
disagree. What the scenario resolved to (the fleet, the tariff, the portfolio, the contract's members) comes from
the run's :class:`~dercosim.scenarios.resolve.RunInputs`, never derived again here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dercosim.analysis.results import Recorded, Records, json_number, meter_kw, plan_vs_ac, rows_of
from dercosim.markets.clearing import settle

if TYPE_CHECKING:
    from dercosim.scenarios.config import Scenario
    from dercosim.scenarios.resolve import RunInputs

def _if(known: bool, x: float) -> float | None:
    """``x`` as a float when it is known, else null."""
    return float(x) if known else None

def _at(times: pd.Series, time_s: int) -> str:
    return str(times.loc[time_s])

class _Walk:
    """Partial figures of each window (:meth:`Records.chunks`) added up by section: the first window's as they
    are (a run of one window gives the figures of a whole read, to the bit), later ones combined by
    :func:`_combine` (sums added, maxima kept, the last state of charge the latest)."""

    def __init__(self) -> None:
        self.parts: dict[str, Any] = {}

    def add(self, section: str, part: dict[str, Any] | None) -> None:
        if part is None:
            self.parts.setdefault(section, None)
            return
        before = self.parts.get(section)
        self.parts[section] = part if before is None else {k: _combine(k, before[k], v) for k, v in part.items()}


def _combine(key: str, before: Any, now: Any) -> Any:
    """Two windows' value of ``key``: ``*_max`` the larger (NaN skipped), ``first_*`` the earlier, ``last_*``
    the later (per entity where they are Series), anything else added (Series aligned, a missing entity 0)."""
    if key.endswith("_max"):
        if isinstance(now, pd.Series):
            return pd.concat([before, now], axis=1).max(axis=1)
        return np.fmax(before, now)
    if key.startswith("interval_"):  # per market interval: the windows' intervals one after the other
        return np.concatenate([before, now])
    if key.startswith("first_"):
        return before
    if key.startswith("last_"):
        return now.combine_first(before) if isinstance(now, pd.Series) else now
    if isinstance(now, (pd.Series, pd.DataFrame)):
        return before.add(now, fill_value=0)
    return before + now


def summarize(records: Records, run: RunInputs, wall_time_s: float, run_wall_s: float,
              tables: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """The figures of ``summary.json`` from a run's recorded rows (:class:`Records`: the kinds with a row per
    step and entity a window of whole hours at a time, so a long run is never held at once).

    ``tables``: if given, receives the per-interval market settlement (``"market"``) for :func:`plot_all`,
    so it is computed once per run."""
    scenario, households, batteries = run.scenario, run.fleet.households, run.fleet.batteries
    step_h = scenario.clock.step_s / 3600.0
    feeder = records.whole("feeder").set_index("time_s").sort_index()
    stamps = feeder["time"]
    market = _MarketWalk(records, run, feeder) if scenario.market is not None and len(households) else None
    if market is not None:
        records.interval_s = market.m.interval_s
    records.midnights = bool(run.tariff.peak_demand_per_kw)
    walk = _Walk()
    for chunk in records.chunks():
        walk.add("households", _household_part(chunk, run, stamps))
        walk.add("batteries", _battery_part(chunk) if len(batteries) else None)
        walk.add("controllers", _controller_part(chunk) if scenario.hems.controller is not None else None)
        if market is not None:
            market.add(chunk)
    vm = records.vm
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

    hh = walk.parts["households"]
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
            "per_bus": {int(b): {"min_pu": json_number(vm[b].min()), "max_pu": json_number(vm[b].max())} for b in vm.columns},
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
            "load_kwh": float(hh["load_kw"] * step_h),
            "pv_kwh": float(hh["pv_kw"] * step_h),
        },
    }
    summary["households"].update(_household_economics(hh, run))
    if len(batteries):
        summary["batteries"] = _battery_figures(walk.parts["batteries"], scenario, batteries)
    if scenario.hems.controller is not None:
        summary["hems"] = {"controller": scenario.hems.controller, "params": scenario.hems.params,
                           "applies_to": scenario.hems.applies_to,
                           **_controller_figures(walk.parts["controllers"])}
    if scenario.planner is not None:
        summary["planner"] = _planner_figures(records, scenario)
    contract = scenario.contract
    if contract is not None:
        c = records.whole("contract").sort_values("time_s")
        last = c.iloc[-1] if len(c) else None
        summary["contract"] = {
            "engine": contract.engine, "interval_s": contract.interval_s,
            "members": len(run.fleet.contract_members),
            "meters": len(run.fleet.contract_meters),
            **{k: (int(last[k]) if last is not None else 0)
               for k in ("contract_rounds", "reports_late", "reports_lost", "replies_lost", "contract_rejected")},
            "note": "members = battery households (weights and RE); meters = the portfolio's other meters (plants, "
                    "households without a battery), whose exports count in RE; "
                    "late = a report that arrived after its round closed (used in the next round); lost = dropped by "
                    "the network; a member whose reply is lost keeps its last RE and weights; rejected = reports "
                    "the contract refused (treated as lost)"}
    if market is not None:
        summary["market"], market_table = market.figures()
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
    elif feeder["line_loading_max_pct"].notna().any():  # the case's own ratings
        summary["lines"] = {"rating_ka": "the case's own", "max_loading_pct": float(feeder["line_loading_max_pct"].max())}
    if "pv_curtailed_kw" in hh:  # the inverters acted (a mode other than unity, or a controller's setpoints)
        delivered = float(hh["pv_kw"] * step_h)
        curtailed = float(hh["pv_curtailed_kw"] * step_h)
        summary["inverters"] = {
            "mode": scenario.inverters.mode, "s_per_kwp": scenario.inverters.s_per_kwp,
            "pv_available_kwh": delivered + curtailed, "pv_delivered_kwh": delivered, "pv_curtailed_kwh": curtailed,
            "q_injected_kvarh": float(hh["q_injected_kvar"] * step_h),
            "q_absorbed_kvarh": float(hh["q_absorbed_kvar"] * step_h),
            "definitions": "available = delivered + curtailed (the array's output before the inverter's cap); "
                           "reactive power + = injected (generator convention), from the bus voltage of the "
                           "previous power flow"}
    return summary

#: Couraud et al. 2022: gas of one household's transaction on their private chain
PAPER_GAS_PER_HOUSEHOLD_TX = 105_957

def evm_figures(records: Records, gas_log: Path) -> dict[str, Any]:
    """Gas and wall time of the contract on the EVM, and its largest gap to the Python rules (summary.json)."""
    c = records.whole("contract")
    figures: dict[str, Any] = {}
    try:
        log = json.loads(Path(gas_log).read_text(encoding="utf-8"))["summary"]
        figures.update({k: log[k] for k in ("fork", "mode", "deploy_gas", "register_gas_median", "household_tx_gas",
                                            "round_gas", "round_wall_ms", "rejected_on_chain", "failed_rounds")})
    except (OSError, ValueError, KeyError) as exc:
        figures["gas_log_error"] = f"{gas_log}: {exc}"
    figures["weight_diff_max_vs_python"] = json_number(c["evm_weight_diff_max"].max()) if len(c) else None
    figures["re_diff_max_vs_python_kwh"] = json_number(c["evm_re_diff_kwh"].max()) if len(c) else None
    figures["paper_gas_per_household_tx"] = PAPER_GAS_PER_HOUSEHOLD_TX
    figures["note"] = ("failed_rounds: the round's transaction reverted and the Python rules' replies were sent; "
                       "round_gas: every transaction of a round (the households' updates and the aggregator's "
                       "compute, or the one batch; the first round of an interval also carries start_interval and "
                       "set_series); differences vs python: the Python rules on the same rounded inputs "
                       "(SoC and weights in ppm, energy in mWh)")
    return figures

def _household_part(chunk: Recorded, run: RunInputs, stamps: pd.Series) -> dict[str, Any]:
    """One window's sums over the households' rows: every row (``load_kw``, ``pv_kw``, the inverters'), and
    per household (demand, generation, meter import and export, bill; :func:`_household_economics`)."""
    scenario, households, batteries = run.scenario, run.fleet.households, run.fleet.batteries
    step_h = scenario.clock.step_s / 3600.0
    hh = rows_of(chunk, "household")
    part: dict[str, Any] = {"load_kw": hh["load_kw"].sum(), "pv_kw": hh["pv_kw"].sum()}
    if "pv_curtailed_kw" in hh:
        q = hh["pv_q_kvar"].to_numpy(float)
        part.update(pv_curtailed_kw=hh["pv_curtailed_kw"].sum(), q_injected_kvar=np.clip(q, 0, None).sum(),
                    q_absorbed_kvar=np.clip(-q, 0, None).sum())
    if not len(households):
        return part
    meter = meter_kw(chunk, batteries)
    names = list(households["name"])
    meter = meter[names]
    load = hh.pivot(index="time_s", columns="entity", values="load_kw")[names]
    hvac = hh.pivot(index="time_s", columns="entity", values="hvac_kw")[names].fillna(0.0)
    pv = hh.pivot(index="time_s", columns="entity", values="pv_kw")[names]
    if "wind_kw" in hh:  # on-site generation: PV and small wind
        pv = pv + hh.pivot(index="time_s", columns="entity", values="wind_kw")[names].fillna(0.0)
    times = pd.DatetimeIndex(stamps.loc[meter.index])
    part.update(demand_kw=(load + hvac).sum(), generation_kw=pv.sum(), import_kw=meter.clip(lower=0).sum(),
                export_kw=(-meter).clip(lower=0).sum(), hvac_kw=hvac.sum(),
                bills=pd.Series(run.tariff.bill(times, meter.to_numpy(), step_h), index=names),
                not_exporting=int((meter >= -1e-9).to_numpy().sum()), household_steps=int(meter.size))
    return part

def _household_economics(sums: dict[str, Any], run: RunInputs) -> dict[str, Any]:
    """Self-consumption, self-sufficiency and bills per household and for the fleet, from the households' sums
    (:func:`_household_part`)."""
    scenario, households = run.scenario, run.fleet.households
    if not len(households):
        return {}
    step_h = scenario.clock.step_s / 3600.0
    names = list(households["name"])
    demand_kwh = sums["demand_kw"] * step_h
    pv_kwh = sums["generation_kw"] * step_h
    import_kwh = sums["import_kw"] * step_h
    export_kwh = sums["export_kw"] * step_h
    bills = sums["bills"]
    tariff = run.tariff
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
        "hvac_kwh": float(sums["hvac_kw"].sum() * step_h),
        "meter_import_kwh": float(import_kwh.sum()),
        "meter_export_kwh": float(export_kwh.sum()),
        "self_consumption": float(max(fleet_pv - export_kwh.sum(), 0.0) / fleet_pv) if fleet_pv > 0 else None,
        "self_sufficiency": float((demand_kwh.sum() - import_kwh.sum()) / demand_kwh.sum()),
        "minutes_not_exporting_share": float(sums["not_exporting"] / sums["household_steps"]),
        "bill_total": float(bills.sum()),
        "currency": tariff.currency,
        "definitions": "self_consumption = (PV + wind - export)/(PV + wind); self_sufficiency = (demand - import)/demand, "
                       "demand = load + HVAC; import/export at the meter after the battery; minutes_not_exporting_share = "
                       "household-minutes without export",
        "per_household": per,
    }

_ENERGIES = ["e_charge_kwh", "e_discharge_kwh", "e_self_discharge_kwh", "e_clipped_kwh"]

def _battery_part(chunk: Recorded) -> dict[str, Any]:
    """One window's battery energies per battery, its last state of charge and its first step's rows."""
    bat = rows_of(chunk, "battery")
    return {"energies": bat.groupby("entity")[_ENERGIES].sum(),
            "last_soc_kwh": bat.sort_values("time_s").groupby("entity")["soc_kwh"].last(),
            "first_rows": bat[bat["time_s"] == bat["time_s"].min()] if len(bat) else bat}

def _battery_figures(walked: dict[str, Any], scenario: Scenario, batteries: pd.DataFrame) -> dict[str, Any]:
    """Energies, cycles and each battery's energy balance, from :func:`_battery_part` over the run."""
    sums, last_soc, first = walked["energies"], walked["last_soc_kwh"], walked["first_rows"]
    table = batteries.set_index("name")
    sums = sums.loc[table.index]
    soc_start = table["soc_init_kwh"]
    if len(first) and int(first["time_s"].min()) > 0:  # a window (run --start): the SoC its first step began from
        first = first.set_index("entity").loc[table.index]
        soc_start = first["soc_kwh"] - (table["eta_charge"] * first["e_charge_kwh"] - first["e_discharge_kwh"]
                                        / table["eta_discharge"] - first["e_self_discharge_kwh"])
    closure = (last_soc.loc[table.index] - soc_start) - (
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
                            "soc_start_kwh": float(soc_start[n]),
                            "soc_end_kwh": float(last_soc[n]),
                            "charged_kwh": float(sums.loc[n, "e_charge_kwh"]),
                            "discharged_kwh": float(sums.loc[n, "e_discharge_kwh"]),
                            "clipped_kwh": float(sums.loc[n, "e_clipped_kwh"]),
                            "equivalent_full_cycles": float(cycles[n])} for n in table.index},
    }

def _planner_figures(records: Records, scenario: Scenario) -> dict[str, Any]:
    """The value-stacking plans (Jiang & Wang 2024) and how their LinDistFlow voltages compare with AC."""
    planner = scenario.planner
    assert planner is not None
    op = records.whole("planner").sort_values("time_s")
    plan = records.whole("plan")
    planned, ac, ac_hourly = plan_vs_ac(plan, records.vm)
    diff = (ac_hourly - planned).where(planned.notna())
    step_h = scenario.clock.step_s / 3600.0
    bat = records.battery_p_by_bus
    set_kw = plan.pivot(index="time_s", columns="bus", values="p_set_kw")
    tracked = (bat[set_kw.columns] - set_kw).abs()
    last = op.iloc[-1] if len(op) else None
    per_plan = op.drop_duplicates("plans") if len(op) else op
    return {
        "kind": planner.kind,
        "mode": planner.admm.mode,
        "replan": planner.replan,
        "plans": int(last["plans"]) if last is not None else 0,
        "fallbacks": int(last["plan_fallback"]) if last is not None else 0,
        "not_converged": int((per_plan["admm_converged"] == 0).sum()),
        "admm_iterations": [int(v) for v in per_plan["admm_iterations"].fillna(0)],
        "admm_time_to_decision_s": [json_number(v) for v in per_plan["admm_time_to_decision_s"]],
        "admm_wall_s": [json_number(v) for v in per_plan["admm_wall_s"]],
        "gap_to_centralised_pct": [json_number(v) for v in per_plan["admm_gap_pct"]],
        "plan_cost": [json_number(v) for v in per_plan["plan_cost"]],
        "centralised_cost": [json_number(v) for v in per_plan["central_cost"]],
        "currency": scenario.tariff.currency,
        "binaries_fixed": [int(v) for v in per_plan["plan_fixed"].fillna(0)],
        "complementarity_violations_left": [int(v) for v in per_plan["plan_violations_left"].fillna(0)],
        "planned_energy_kwh": {
            name: float(plan[f"plan_{name}_kw"].sum() * step_h) for name in ("p_grid", "p_b2b", "p_b2g", "p_ets",
                                                                               "p_etb", "p_feed")},
        "battery_setpoint_tracking_max_kw": json_number(tracked.max().max()),
        "voltage_plan_vs_ac": {
            "form": "LinDistFlow squared-voltage form (Baran & Wu 1989) vs AC power flow, hourly means",
            "max_abs_diff_pu": json_number(diff.abs().max().max()),
            "mean_diff_pu": json_number(diff.stack().mean()),
            "note": "diff = AC − plan; negative: the plan overestimated the voltage",
            "per_bus": {int(b): {"max_abs_diff_pu": json_number(diff[b].abs().max()), "ac_min_pu": json_number(ac[b].min()),
                                 "plan_min_pu": json_number(planned[b].min())} for b in planned.columns},
        },
    }

#: the columns of ``market.csv``, one row per settled market interval
MARKET_COLUMNS = ["interval_start", "bid_kwh", "committed_kwh", "delivered_kwh", "imbalance_kwh",
                  "forecast_net_export_kwh", "wholesale_per_kwh", "imbalance_per_kwh", "revenue", "imbalance_cost",
                  "soc_target_frac", "mode_s", "planned_battery_kwh"]


#: the settlement's figures per market interval (:class:`dercosim.markets.clearing.Settlement`)
INTERVAL_FIELDS = ("delivered_kwh", "committed_kwh", "revenue", "imbalance_kwh", "imbalance_cost")


class _MarketWalk:
    """The aggregator's settlement (:func:`dercosim.markets.clearing.settle`) a window at a time: per interval
    (windows hold whole intervals), per household (bills, energy covered by the fleet) and for the fleet."""

    def __init__(self, records: Records, run: RunInputs, feeder: pd.DataFrame) -> None:
        scenario = run.scenario
        m = scenario.market
        assert m is not None
        self.run, self.m = run, m
        self.step_h = scenario.clock.step_s / 3600.0
        self.steps = m.interval_s // scenario.clock.step_s
        self.agg = records.whole("market").set_index("time_s").sort_index()
        self.central, self.billed = run.fleet.plants, run.fleet.portfolio
        self.outside = [n for n in run.fleet.households["name"] if n not in self.central and n not in self.billed]
        self.homes = self.billed + self.outside  # every household, in the portfolio or not
        self.n_int = len(feeder) // self.steps
        self.minutes = self.n_int * self.steps
        self.stamps = feeder["time"].iloc[:self.minutes]
        self.first = self.agg.iloc[::self.steps].iloc[:self.n_int]
        self.walk = _Walk()

    def add(self, chunk: Recorded) -> None:
        """Settle the window's whole intervals."""
        if self.n_int == 0:
            return
        run, m, steps = self.run, self.m, self.steps
        meter = meter_kw(chunk, run.fleet.batteries)
        meter = meter[meter.index.isin(self.stamps.index)]  # the run's whole intervals only
        if not len(meter):
            return
        at = self.stamps.index.get_indexer(meter.index)
        if len(meter) % steps or at[0] % steps:
            raise ValueError(f"a report window of {len(meter)} steps from step {at[0]} does not hold whole "
                             f"market intervals of {steps} steps")
        first = self.first.iloc[at[0] // steps: at[0] // steps + len(meter) // steps]
        times = pd.DatetimeIndex(self.stamps.iloc[at])
        tariff = run.tariff
        central = self.central
        st = settle(meter[self.billed].to_numpy(),
                    meter[central].to_numpy() if central else np.zeros((len(meter), 0)),
                    first["committed_kwh"].to_numpy(), first["wholesale_per_kwh"].to_numpy(),
                    first["imbalance_per_kwh"].to_numpy(), tariff.import_price(times), tariff.export_price(times),
                    self.step_h, steps, m.vpw_share, m.imbalance_rule, m.imbalance_where)
        homes = self.homes
        imports = meter[homes].clip(lower=0)
        hh = rows_of(chunk, "household")
        load = hh.pivot(index="time_s", columns="entity", values="load_kw")[homes].loc[meter.index]
        self.walk.add("market", {
            **{f"interval_{f}": getattr(st, f) for f in INTERVAL_FIELDS},
            "bills": st.bills, "vpw_kwh": st.vpw_kwh,
            "bills_outside": (tariff.bill(times, meter[self.outside].to_numpy(), self.step_h) if self.outside
                              else np.zeros(0)),
            "load_kw": load.sum(), "import_kw": imports.sum(),
            "not_exporting": int((meter[homes] >= -1e-9).to_numpy().sum()),
            "not_importing": int((imports <= 1e-9).to_numpy().sum()), "home_steps": int(meter[homes].size)})

    def figures(self) -> tuple[dict[str, Any], pd.DataFrame]:
        """The market's figures (``summary.json`` → ``market``) and the per-interval table of ``market.csv``."""
        m, run, step_h = self.m, self.run, self.step_h
        tariff = run.tariff
        if self.n_int == 0:  # shorter than one market interval: nothing to settle
            return {"intervals": 0, "note": "the run is shorter than one market interval; nothing was settled",
                    "bill_total": None, "bills_per_household": {}}, pd.DataFrame(columns=MARKET_COLUMNS)
        w = self.walk.parts["market"]
        per = {f: w[f"interval_{f}"] for f in INTERVAL_FIELDS}
        first, agg, billed, outside = self.first, self.agg, self.billed, self.outside
        table = pd.DataFrame({
            "interval_start": first["time"].to_numpy(), "bid_kwh": first["bid_kwh"].to_numpy(),
            "committed_kwh": per["committed_kwh"], "delivered_kwh": per["delivered_kwh"],
            "imbalance_kwh": per["imbalance_kwh"],
            "forecast_net_export_kwh": first["forecast_net_export_kwh"].to_numpy(),
            "wholesale_per_kwh": first["wholesale_per_kwh"].to_numpy(),
            "imbalance_per_kwh": first["imbalance_per_kwh"].to_numpy(), "revenue": per["revenue"],
            "imbalance_cost": per["imbalance_cost"], "soc_target_frac": first["soc_target_frac"].to_numpy(),
            "mode_s": first["mode_s"].to_numpy(), "planned_battery_kwh": first["planned_battery_kwh"].to_numpy()})
        committed_kwh, imbalance_kwh = per["committed_kwh"], per["imbalance_kwh"]
        committed = committed_kwh > 1e-9
        consumed_kwh = float(w["load_kw"].sum() * step_h)
        self_consumed = consumed_kwh - float(w["import_kw"].sum() * step_h)  # met by own generation and battery
        bills, bills_outside, vpw_kwh = w["bills"], w["bills_outside"], w["vpw_kwh"]
        summary = {
            "wholesale": m.wholesale, "imbalance": m.imbalance, "imbalance_rule": m.imbalance_rule,
            "imbalance_where": m.imbalance_where,
            "clearing": m.clearing, "residual_demand_slope": m.residual_demand_slope,
            "interval_s": m.interval_s, "intervals": int(self.n_int), "currency": tariff.currency,
            "milp_failures": int(agg["milp_failures"].max()) if len(agg) else 0,
            "bid_kwh": float(table["bid_kwh"].sum()), "committed_kwh": float(committed_kwh.sum()),
            "delivered_kwh": float(per["delivered_kwh"].sum()),
            "wholesale_revenue": float(per["revenue"].sum()), "imbalance_cost": float(per["imbalance_cost"].sum()),
            "imbalance_kwh_abs": float(np.abs(imbalance_kwh).sum()),
            "mean_abs_deviation_of_committed": (float(np.mean(np.abs(imbalance_kwh[committed])
                                                              / committed_kwh[committed])) if committed.any()
                                                else None),
            "market_revenue_net": float(per["revenue"].sum() - per["imbalance_cost"].sum()),
            "bill_total": float(bills.sum() + bills_outside.sum()), "vpw_kwh": float(vpw_kwh.sum()),
            "households_in_portfolio": len(billed), "households_outside": len(outside),
            # the three published meanings of "self-consumption" (Couraud et al. 2022 and its preprint), each by name
            "self_consumed_share": max(self_consumed, 0.0) / consumed_kwh if consumed_kwh > 0 else None,
            "minutes_not_exporting_share": float(w["not_exporting"] / w["home_steps"]),
            "fleet_supplied_share": (max(self_consumed + float(vpw_kwh.sum()), 0.0) / consumed_kwh
                                     if consumed_kwh > 0 else None),
            "self_supplied_minutes_share": float(w["not_importing"] / w["home_steps"]),
            "definitions": "delivered = export − import of the portfolio (household meters after batteries and the "
                           "aggregator's plants) per interval; revenue on the committed volume at the wholesale price; "
                           "imbalance cost |delivered − committed| × imbalance price (or GB single price); "
                           "self_consumed_share = energy consumed at the home meters that was not imported "
                           "(consumed − imported, per minute) / energy consumed; "
                           "minutes_not_exporting_share = home-minutes without export (the authors' time metric); "
                           "fleet_supplied_share = energy consumed that the fleet supplied (own generation, battery, or "
                           "the virtual private wire from other fleet meters and the aggregator's plants) / energy "
                           "consumed; self_supplied_minutes_share = home-minutes without import",
            "bills_per_household": {**{n: float(b) for n, b in zip(billed, bills)},
                                    **{n: float(b) for n, b in zip(outside, bills_outside)}},
        }
        return summary, table

def _controller_part(chunk: Recorded) -> dict[str, Any] | None:
    """One window's controller counts and call times per controller (None: no controller rows)."""
    ctrl = rows_of(chunk, "controller")
    if not len(ctrl):
        return None
    # whole columns grouped once (a loop over 2,000 households' groups took seconds)
    groups = ctrl.groupby("entity", sort=True)
    zeros = pd.Series(0, index=list(groups.groups))
    counted = lambda col: ctrl[col].fillna(0).groupby(ctrl["entity"]).sum() if col in ctrl else zeros  # noqa: E731
    part: dict[str, Any] = {"faults": counted("fault"), "overruns": counted("overrun"),
                            "step_ms_max": groups["step_ms"].max() if "step_ms" in ctrl else zeros * np.nan,
                            "solves": zeros, "solve_ms": zeros * 0.0, "solve_ms_max": zeros * np.nan,
                            "fallbacks": zeros, "retried": zeros,
                            "all_solves": 0, "all_solve_ms": 0.0, "all_solve_ms_max": np.nan}
    if "solve_ms" in ctrl.columns and ctrl["solve_ms"].notna().any():
        all_ms = ctrl["solve_ms"].dropna()
        part.update(solves=groups["solve_ms"].count(), solve_ms=groups["solve_ms"].sum(),
                    solve_ms_max=groups["solve_ms"].max(), fallbacks=counted("fallback"), retried=counted("retried"),
                    all_solves=len(all_ms), all_solve_ms=all_ms.sum(), all_solve_ms_max=all_ms.max())
    return part

def _controller_figures(sums: dict[str, Any] | None) -> dict[str, Any]:
    """Faults, overruns, call times, and (MPC) solves and fallbacks per household, from :func:`_controller_part`
    over the run."""
    if sums is None:
        return {}
    per: dict[str, dict[str, Any]] = {}
    has_solves = sums["all_solves"] > 0
    faults, overruns, step_max = sums["faults"], sums["overruns"], sums["step_ms_max"]
    for entity in faults.index:
        entry: dict[str, Any] = {"faults": int(faults[entity]), "overruns": int(overruns[entity]),
                                 "step_ms_max": json_number(step_max[entity])}
        if has_solves:
            n = int(sums["solves"][entity])
            entry.update({
                "solves": n,
                "solve_ms_mean": float(sums["solve_ms"][entity] / n) if n else None,
                "solve_ms_max": float(sums["solve_ms_max"][entity]) if n else None,
                "fallbacks": int(sums["fallbacks"][entity]),
                "retried": int(sums["retried"][entity]),
            })
        per[entity.removeprefix("ctrl_")] = entry
    out: dict[str, Any] = {
        "faults": int(sum(v["faults"] for v in per.values())),
        "overruns": int(sum(v["overruns"] for v in per.values())),
        "step_ms_max": json_number(step_max.max()) if step_max.notna().any() else None,
    }
    notes = ["fault = the controller raised, exited or returned a non-finite setpoint and the fallback was used "
             "for that step (hems.on_fault = 'fallback'); overrun = a call over hems.step_timeout_s"]
    if has_solves:
        out.update({"solves": int(sums["all_solves"]), "solve_ms_mean": float(sums["all_solve_ms"] / sums["all_solves"]),
                    "solve_ms_max": float(sums["all_solve_ms_max"]),
                    "fallbacks": int(sum(v["fallbacks"] for v in per.values())),
                    "retried": int(sum(v["retried"] for v in per.values()))})
        notes.append("fallback = the solver failed and the rule-based action was used for that step; "
                     "retried = the primary QP solver (dercosim's interior point by default) did not converge and PIQP "
                     "(then qpOASES) answered")
    out["note"] = "; ".join(notes)
    out["per_household"] = per
    return out
