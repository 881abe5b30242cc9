"""Studies on a value-stacking scenario's first planning day, without mosaik (Jiang & Wang 2024).

``compare_modes``: the same problem solved by ADMM in each mode — synchronous
without latency, synchronous with the scenario's latency, the naive
synchronous baseline (a late reply counts as zero), asynchronous (partial
barrier S, bounded delay τ) and asynchronous with adaptive ρ — against the
centralised optimum of the same relaxed problem. Table: iterations,
convergence, simulated time-to-decision, wall time, cost (24) and gap;
figure: primal and dual residual per iteration.

``value_streams``: full value stacking against the same problem without
battery-to-building (B2B), without battery-to-grid (B2G), without local
trading, and without any of them (the battery cannot discharge anywhere: the
no-battery baseline). The marginal contribution of a stream is the share of
the battery's whole cost reduction that is lost without it,
(C_without − C_full) / (C_none − C_full), with the relaxed and the
fixed (binaries respected) costs. On the shipped scenarios the
no-battery baseline is infeasible under the operator's limits (the evening
peak takes bus 18 to 0.899 pu in LinDistFlow), so it is costed with the
voltage limits dropped and the table says so.

Both studies use the scenario's first day (its first 24 hours), the seeded
fleet of a run, and the scenario's ADMM settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from dercosim.planning.admm import ADMMSettings, Latency
from dercosim.planning.valuestack import CentralQP, InfeasibleGrid, Streams, plan_voltages_pu, solve_value_stacking
from dercosim.scenarios.planner_case import ValueStackingCase, admm_settings, case_from_scenario
from dercosim.scenarios.config import Scenario, ScenarioError

#: the modes compared, in the order of the table and the figure
MODES = ("sync", "sync_latency", "sync_naive", "async", "async_adaptive")
MODE_LABELS = {
    "sync": "synchronous, no latency",
    "sync_latency": "synchronous, waits for all (latency)",
    "sync_naive": "synchronous, late = zero (latency)",
    "async": "asynchronous S of N, τ (latency)",
    "async_adaptive": "asynchronous + adaptive ρ (latency)",
}
#: value-stream variants: name -> streams switched off
VARIANTS = {"full": {}, "no_b2b": {"b2b": False}, "no_b2g": {"b2g": False}, "no_trading": {"trading": False},
            "no_battery": {"b2b": False, "b2g": False, "trading": False}}


def _planner_scenario(scenario: Scenario) -> None:
    if scenario.planner is None:
        raise ScenarioError(f"{scenario.name}: the studies need a [planner] table (a value-stacking scenario)")


def _first_day(case: ValueStackingCase):  # noqa: ANN202 - (communities, market, feeder)
    return case.problem(0, min(24, case.n_hours))


def mode_settings(scenario: Scenario, max_iter: int | None = None) -> dict[str, ADMMSettings]:
    """The settings of each mode, from the scenario's ``planner.admm`` (its latency, S, τ, ρ, ε, seed).

    If the scenario leaves S unset or at N, S = N − 2 (at least 1) is used for
    the asynchronous modes, and τ = 5 if the scenario's τ is 1.
    """
    _planner_scenario(scenario)
    planner = scenario.planner
    assert planner is not None
    a = planner.admm
    n = len(next(g for g in scenario.households.groups if g.name == planner.communities).buses)
    base = admm_settings(scenario, **({} if max_iter is None else {"max_iter": int(max_iter)}))
    s_of_n = a.partial_barrier if a.partial_barrier is not None and a.partial_barrier < n else max(1, n - 2)
    tau = a.max_delay if a.max_delay > 1 else 5
    return {
        "sync": replace(base, mode="sync", latency=Latency(), loss_prob=0.0, adaptive=False),
        "sync_latency": replace(base, mode="sync", adaptive=False),
        "sync_naive": replace(base, mode="sync_naive", adaptive=False),
        "async": replace(base, mode="async", partial_barrier=s_of_n, max_delay=tau, adaptive=False),
        "async_adaptive": replace(base, mode="async", partial_barrier=s_of_n, max_delay=tau, adaptive=True),
    }


@dataclass
class ModesStudy:
    table: pd.DataFrame  #: one row per mode
    history: pd.DataFrame  #: per mode and iteration: residuals, ε, ρ, simulated time, cost
    central_cost: float
    central_objective: float
    currency: str


def compare_modes(scenario: Scenario, max_iter: int | None = None, case: ValueStackingCase | None = None,
                  log: Callable[[str], None] = lambda msg: None) -> ModesStudy:
    """Solve the first day's relaxed problem in every mode of :data:`MODES` and centrally."""
    settings = mode_settings(scenario, max_iter)
    case = case or case_from_scenario(scenario)
    comms, market, feeder = _first_day(case)
    central = CentralQP(comms, market, feeder).solve()
    log(f"centralised optimum: cost {central.total_cost:.2f} {case.currency}")
    rows, hist = [], []
    for mode in MODES:
        st = settings[mode]
        res = solve_value_stacking(comms, market, feeder, st, binaries="relaxed", central=False, fix_rounds=0)
        run = res.runs[0]
        gap = 100.0 * (res.relaxed_objective - central.objective) / abs(central.objective)
        rows.append({"mode": mode, "description": MODE_LABELS[mode], "iterations": run.iterations,
                     "converged": run.converged, "time_to_decision_s": run.time_to_decision_s, "wall_s": run.wall_s,
                     "wall_ms_per_iteration": 1000.0 * run.wall_s / max(run.iterations, 1),
                     "cost": res.relaxed_cost, "gap_pct": gap, "rho_final": float(run.history.rho.iloc[-1]),
                     "messages_sent": run.messages_sent, "messages_lost": run.messages_lost,
                     "solver_retries": res.solver_retries, "solver_failures": res.solver_failures})
        hist.append(run.history.assign(mode=mode))
        log(f"{mode:15s} {run.iterations:4d} iterations ({'converged' if run.converged else 'NOT converged'}), "
            f"{run.time_to_decision_s:7.1f} s simulated, {run.wall_s:5.1f} s wall, "
            f"cost {res.relaxed_cost:.2f}, gap {gap:+.3f} %")
    return ModesStudy(table=pd.DataFrame(rows), history=pd.concat(hist, ignore_index=True),
                      central_cost=central.total_cost, central_objective=central.objective, currency=case.currency)


@dataclass
class StreamsStudy:
    table: pd.DataFrame  #: one row per variant: ADMM and centralised cost, contributions
    currency: str


def value_streams(scenario: Scenario, admm: bool = True, case: ValueStackingCase | None = None,
                  log: Callable[[str], None] = lambda msg: None, milp: bool = False) -> StreamsStudy:
    """Cost of the first day with each value stream switched off (:data:`VARIANTS`), centrally and by ADMM.

    Centrally each variant is solved relaxed (``central_relaxed_cost``: a
    lower bound of the problem with binaries) and then with the same
    complementarity fix-and-resolve the ADMM uses (``central_cost``: a
    feasible point, an upper bound). The relaxation lets a community sell
    its battery's energy on the local market and buy it back in the same
    hour, which is battery-to-building in disguise: without B2B the relaxed
    cost barely moves, the fixed one does. Contributions are given for both.
    The ADMM runs use the scenario's settings, with fix-and-resolve. With
    ``milp`` each variant is also solved with its binaries as one MILP
    (``central_milp_cost``; HiGHS, can take minutes without B2B): the
    mixed-integer optimum that fix-and-resolve approximates.
    """
    assert scenario.planner is not None
    planner_binaries = scenario.planner.binaries
    _planner_scenario(scenario)
    case = case or case_from_scenario(scenario)
    comms, market, feeder = _first_day(case)
    settings = admm_settings(scenario)
    rows = []
    for name, off in VARIANTS.items():
        streams = replace(Streams(), **off)
        limits = "enforced"
        try:
            cq = CentralQP(comms, market, feeder, streams)
            relaxed = cq.solve()
            central, _, left = cq.solve_fix_and_resolve(relaxed=relaxed)
        except InfeasibleGrid:
            if name != "no_battery":
                raise
            # without a battery the communities' evening peak alone breaks v_min: cost it with the
            # voltage limits dropped, and say so (the battery's value includes keeping the feeder legal)
            limits = "voltage limits dropped (infeasible)"
            relaxed = central = CentralQP(comms, market, replace(feeder, v_min_pu=0.0, v_max_pu=10.0),
                                          streams).solve()
            left = 0
        v = plan_voltages_pu(feeder, comms, central.x)
        row: dict[str, Any] = {"variant": name, "central_cost": central.total_cost,
                               "central_relaxed_cost": relaxed.total_cost, "central_violations_left": left,
                               "network_limits": limits,
                               "central_min_v_pu": float(v.min()), "central_max_v_pu": float(v.max())}
        if milp and limits == "enforced":
            row["central_milp_cost"] = cq.solve_mixed_integer()[0].total_cost
        if admm and limits == "enforced":
            res = solve_value_stacking(comms, market, feeder, settings, streams=streams,
                                       binaries=planner_binaries, central=False)
            same = cq.solve(res.fixings).total_cost if any(f.count for f in res.fixings) else relaxed.total_cost
            row.update(admm_cost=res.solution.total_cost, admm_relaxed_cost=res.relaxed_cost,
                       admm_gap_pct=100.0 * (res.relaxed_objective - relaxed.objective) / abs(relaxed.objective),
                       central_same_fixings_cost=same,
                       admm_iterations=res.iterations,
                       admm_converged=res.converged, complementarity_violations_left=res.violations_left)
        rows.append(row)
        log(f"{name:11s} centralised {central.total_cost:9.2f} {case.currency} (min {v.min():.4f} pu"
            + (")" if limits == "enforced" else f", {limits})")
            + (f", ADMM {row['admm_cost']:9.2f} ({row['admm_iterations']} iterations)" if "admm_cost" in row else ""))
    table = pd.DataFrame(rows)
    for col in ("central_relaxed", "central", "central_milp", "admm"):
        if f"{col}_cost" not in table:
            continue
        cost = table.set_index("variant")[f"{col}_cost"]
        if not np.isfinite(cost["no_battery"]):  # ADMM not run on a relaxed-limits baseline: use the central one
            cost = cost.copy()
            cost["no_battery"] = table.set_index("variant").loc["no_battery", "central_cost"]
        value = cost["no_battery"] - cost["full"]  # the battery's whole cost reduction
        table[f"{col}_contribution_pct"] = [
            (100.0 * (cost[v] - cost["full"]) / value if v not in ("full", "no_battery") and value > 0 else math.nan)
            for v in table["variant"]]
    return StreamsStudy(table=table, currency=case.currency)


# ---------------------------------------------------------------- output


def plot_convergence(study: ModesStudy, title: str, path: Path) -> Path:
    """Primal and dual residual per iteration for every mode, with each mode's stopping thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharex=True)
    colors = dict(zip(MODES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for mode, h in study.history.groupby("mode", sort=False):
        row = study.table.set_index("mode").loc[mode]
        label = (f"{MODE_LABELS[mode]}: {int(row.iterations)} it, {row.time_to_decision_s:.0f} s"
                 + ("" if row.converged else " (no convergence)"))
        for ax, col in zip(axes, ("r_primal", "r_dual")):
            ax.semilogy(h["iteration"], h[col], color=colors[mode], lw=2.2 if mode == "sync" else 1.2,
                        ls=":" if mode == "sync" else "-", label=label)  # sync and sync_latency share iterates
    eps = study.history.groupby("mode", sort=False)[["eps_pri", "eps_dual"]].min().min()
    boyd = bool((study.history["r_dual"] != study.history["dz"]).any()) if "dz" in study.history else True
    dual_name = "dual residual ρ‖z − z_prev‖" if boyd else "dual residual ‖z − z_prev‖ (kW)"
    for ax, col, name in zip(axes, ("eps_pri", "eps_dual"), ("primal residual ‖x − z‖ (kW)", dual_name)):
        ax.axhline(eps[col], color="k", ls=":", lw=1, label="ε (stopping threshold)")
        ax.set_xlabel("iteration")
        ax.set_title(name)
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_streams(studies: dict[str, StreamsStudy], path: Path) -> Path:
    """Cost per variant (bars per scenario, like Jiang & Wang 2024, Fig. 3) and marginal contributions (Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(studies)
    tables = {n: st.table.set_index("variant") for n, st in studies.items()}
    which = "admm" if all("admm_cost" in t for t in tables.values()) else "central"
    for t in tables.values():  # a baseline ADMM did not solve (limits dropped) shows its centralised cost
        t[f"{which}_cost"] = t[f"{which}_cost"].fillna(t["central_cost"])
    variants = list(VARIANTS)
    width = 0.8 / len(variants)
    for k, v in enumerate(variants):
        costs = [tables[n].loc[v, f"{which}_cost"] for n in names]
        dropped = any(tables[n].loc[v].get("network_limits", "enforced") != "enforced" for n in names)
        ax1.bar(np.arange(len(names)) + (k - (len(variants) - 1) / 2) * width, costs, width,
                label=v + (" (voltage limits dropped: infeasible)" if dropped else ""), hatch="//" if dropped else None)
    every = np.concatenate([t[f"{which}_cost"].to_numpy(float) for t in tables.values()])
    # from zero (a bar's length is its value); the differences, small beside the cost, are written on the bars
    ax1.set_ylim(min(0.0, 1.1 * every.min()), max(0.0, 1.15 * every.max()))
    for container in ax1.containers:
        ax1.bar_label(container, fmt="%.1f", fontsize=6, rotation=90, padding=2)
    ax1.set_xticks(range(len(names)), names)
    ax1.set_ylabel(f"cost of the day ({next(iter(studies.values())).currency})")
    ax1.set_title(f"cost with each value stream switched off ({'ADMM' if which == 'admm' else 'centralised'})")
    ax1.legend(fontsize=8)
    streams = ["no_b2b", "no_b2g", "no_trading"]
    width = 0.8 / len(streams)
    for k, v in enumerate(streams):
        vals = [tables[n].loc[v, f"{which}_contribution_pct"] for n in names]
        ax2.bar(np.arange(len(names)) + (k - 1) * width, vals, width, label=v.replace("no_", ""))
    ax2.set_xticks(range(len(names)), names)
    ax2.set_ylabel("share of the battery's cost reduction lost (%)")
    ax2.set_title("marginal contribution of each value stream")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(df: pd.DataFrame, floats: str = "{:.6g}") -> str:
    """A plain-text table (what the CLI prints)."""
    shown = df.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "—" if not np.isfinite(v) else floats.format(v))
    return shown.to_string(index=False)
