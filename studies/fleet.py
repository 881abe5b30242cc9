"""``dercosim study fleet``: the scenarios 0–5 of Couraud et al. 2022 side by side, as the paper's Table II.

Each case is a full co-simulation (``fleet_market_s0`` … ``_s5``) over the
same period, run in its own process (one per core; a mosaik world per
process), with a line of progress as each finishes. The table: bills and
their reduction against s0, market revenue, imbalance cost, total revenue
(bill reduction + market revenue − imbalance cost), self-consumption rate
(energy consumed − imported) / consumed, the share of household-minutes
without import, the mean |delivered − committed| / committed, the minimum
voltage and the minutes outside the limits on IEEE-33 — beside the paper's
monthly figures where it gives them. Our data differ from the paper's
(weather proxy, profiles, a shorter period by default): compare orderings
and mechanisms, not pounds.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from dercosim.scenarios.config import ScenarioError

CASES = ("s0", "s1", "s2", "s3", "s4", "s5")
#: Couraud et al. 2022, Table II (monthly, GBP) and section IV-B: the self-consumption rate (energy self-consumed /
#: energy consumed) and the share of time the homes were self-supplied, as dercosim reads it (home-minutes not
#: exporting), of s5 and s4
PAPER = {"s0": {}, "s1": {"total_revenue": 2032.0}, "s2": {"total_revenue": 2722.0},
         "s3": {"total_revenue": 3438.0},
         "s4": {"total_revenue": 3689.0, "self_consumed_share": 0.41, "minutes_not_exporting_share": 0.64},
         "s5": {"total_revenue": 1014.0, "self_consumed_share": 0.22, "minutes_not_exporting_share": 0.28}}
#: the three meanings of self-consumption, each under its own name (see ``summary.json`` → market → definitions)
SELF_CONSUMPTION = ("self_consumed_share", "minutes_not_exporting_share", "fleet_supplied_share")


def _run_case(case: str, duration_s: int, out_dir: str) -> tuple[str, dict[str, Any], float]:
    """One case in a worker process: its summary and wall time."""
    from dercosim.scenarios.bundled import bundled_scenarios
    from dercosim.scenarios.load import load_scenario
    from dercosim.scenarios.world import run_scenario, with_duration

    started = time.perf_counter()
    scenario = with_duration(load_scenario(bundled_scenarios()[f"fleet_market_{case}"]), duration_s)
    result = run_scenario(scenario, Path(out_dir) / case, progress=False)
    return case, result.summary, time.perf_counter() - started


def row(case: str, summary: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    hh, market, v = summary["households"], summary.get("market", {}), summary["voltage"]
    bills = hh.get("bill_total")
    reduction = None
    if baseline is not None and bills is not None:
        reduction = baseline["households"]["bill_total"] - bills
    revenue = market.get("wholesale_revenue", 0.0)
    imbalance = market.get("imbalance_cost", 0.0)
    return {"scenario": case, "bill_total": bills, "bill_reduction_vs_s0": reduction,
            "market_revenue": revenue, "imbalance_cost": imbalance,
            "total_revenue": None if reduction is None else reduction + revenue - imbalance,
            # the homes only: a central battery's charging is not a household's import
            **({name: market.get(name) for name in SELF_CONSUMPTION} if market else {
                # no aggregator (s0, s1, s5): the same definitions over the homes' meters; no fleet supplies them
                "self_consumed_share": hh.get("self_sufficiency"),
                "minutes_not_exporting_share": hh.get("minutes_not_exporting_share"),
                "fleet_supplied_share": hh.get("self_sufficiency")}),
            "self_supplied_minutes_share": market.get("self_supplied_minutes_share"),
            "mean_abs_deviation_of_committed": market.get("mean_abs_deviation_of_committed"),
            "v_min_pu": v.get("min_pu"), "minutes_outside_limits": v.get("minutes_outside_limits"),
            "paper_total_revenue_month": PAPER[case].get("total_revenue"),
            "paper_self_consumed_share": PAPER[case].get("self_consumed_share"),
            "paper_minutes_not_exporting_share": PAPER[case].get("minutes_not_exporting_share")}


def fleet_study(out_dir: Path, duration_s: int, cases: tuple[str, ...] = CASES, workers: int | None = None,
                log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the cases in parallel processes and write ``fleet_table.csv/.md/.png`` to ``out_dir``."""
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise ValueError(f"unknown case(s) {unknown}; expected some of {', '.join(CASES)}")
    workers = workers or os.cpu_count() or 1
    summaries: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(cases))) as pool:
        futures = [pool.submit(_run_case, c, duration_s, str(out_dir)) for c in cases]
        for k, future in enumerate(as_completed(futures), 1):
            case, summary, wall_s = future.result()
            summaries[case] = summary
            log(f"[{k}/{len(cases)}] {case} done in {wall_s:.0f} s")
    baseline = summaries.get("s0")
    table = pd.DataFrame([row(c, summaries[c], baseline) for c in cases])
    table.to_csv(out_dir / "fleet_table.csv", index=False)
    (out_dir / "fleet_table.md").write_text(markdown(table, duration_s), encoding="utf-8")
    plot(table, out_dir / "fleet_table.png")
    if "s4" in cases and "s5" in cases:
        plot_fleet_power(out_dir, out_dir / "fleet_power_s4_s5.png")
    return table


def plot_fleet_power(study_dir: Path, path: Path) -> Path:
    """Net power of the 70 households, s4 against s5 (Couraud et al. 2022, Fig. 9a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for case in ("s5", "s4"):
        (run,) = [p for p in (study_dir / case).glob("timeseries.parquet")]
        df = pd.read_parquet(run)
        hh = df[(df.kind == "household") & df.entity.str.startswith("hh_")]
        bat = df[(df.kind == "battery") & df.entity.str.startswith("bat_hh_")]
        net = hh.groupby("time")["net_kw"].sum()
        if len(bat):  # after the batteries: the meters
            net = net + bat.groupby("time")["p_kw"].sum()
        ax.plot(net.index.tz_localize(None), net.to_numpy(), lw=1, label=f"{case}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("households' net power at the meters\n(kW, + = import)")
    ax.set_title("fleet power: s4 (batteries, market, contract) against s5 (PV or wind only)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(table: pd.DataFrame, duration_s: int) -> str:
    head = ("| scenario | bills | bill reduction vs s0 | market revenue | imbalance cost | total revenue | "
            "self-consumed (energy) | minutes not exporting | fleet-supplied (energy) | minutes without import | "
            "mean \\|Δ\\|/committed | v min (pu) | min outside limits | paper total revenue (month) | "
            "paper self-consumed | paper minutes |")
    lines = [f"# Couraud et al. 2022, Table II, reproduced over {duration_s / 86400:g} days (GBP)", "", head,
             "|" + " --- |" * 16]

    def f(x: Any, spec: str = ".2f") -> str:
        return "—" if x is None or (isinstance(x, float) and x != x) else format(x, spec)

    for r in table.to_dict("records"):
        lines.append(f"| {r['scenario']} | {f(r['bill_total'])} | {f(r['bill_reduction_vs_s0'])} | "
                     f"{f(r['market_revenue'])} | {f(r['imbalance_cost'])} | {f(r['total_revenue'])} | "
                     f"{f(r['self_consumed_share'], '.1%')} | {f(r['minutes_not_exporting_share'], '.1%')} | "
                     f"{f(r['fleet_supplied_share'], '.1%')} | {f(r['self_supplied_minutes_share'], '.1%')} | "
                     f"{f(r['mean_abs_deviation_of_committed'], '.1%')} | {f(r['v_min_pu'], '.4f')} | "
                     f"{f(r['minutes_outside_limits'], '.0f')} | {f(r['paper_total_revenue_month'], '.0f')} | "
                     f"{f(r['paper_self_consumed_share'], '.0%')} | "
                     f"{f(r['paper_minutes_not_exporting_share'], '.0%')} |")
    lines += ["", "total revenue = bill reduction vs s0 + market revenue − imbalance cost; self-consumed = "
              "(consumed − imported) / consumed at the home meters, per minute; minutes not exporting = share of "
              "home-minutes without export (the authors' time metric); fleet-supplied = consumed energy from own "
              "generation, the battery or the fleet's other meters and plants (virtual private wire) / consumed; "
              "minutes without import = share of home-minutes without import.", ""]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.bar(table["scenario"], pd.to_numeric(table["total_revenue"], errors="coerce").fillna(0.0), color="tab:blue")
    ax1.set_ylabel("total revenue (GBP)")
    ax1.set_title("total revenue: bill reduction + market − imbalance")
    x = np.arange(len(table))
    labels = {"self_consumed_share": "self-consumed (energy)", "minutes_not_exporting_share": "minutes not exporting",
              "fleet_supplied_share": "fleet-supplied (energy)"}
    for i, (name, label) in enumerate(labels.items()):
        values = 100 * pd.to_numeric(table[name], errors="coerce").fillna(0.0)
        ax2.bar(x + (i - 1) * 0.27, values, width=0.27, label=label)
    ax2.set_xticks(x, table["scenario"])
    ax2.set_ylabel("share (%)")
    ax2.set_title("self-consumption, three meanings")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- sensitivity studies (the paper's Fig. 7 and 8)


def _merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def sensitivity_cases(path: Path, base: Any, variants: list[tuple[str, dict]], duration_s: int) -> list:
    """The variants (label, scenario updates) of ``base`` (loaded from ``path``) as sweep cases, each validated
    and checked; :class:`ScenarioError` names the file, the variant and the key (nothing is written)."""
    from pydantic import ValidationError

    from dercosim.scenarios.config import Scenario, format_validation_error

    from dercosim.scenarios.load import check_scenario
    from dercosim.studies.sweep import Case
    from dercosim.scenarios.world import with_duration

    cases = []
    for label, upd in variants:
        where = f"{path} ({label}, {duration_s / 86400:g} days)"
        try:
            scenario = Scenario.model_validate(_merge(base.model_dump(), upd))
        except ValidationError as exc:
            raise ScenarioError(format_validation_error(where, exc)) from None
        scenario._source_dir = base._source_dir
        scenario = with_duration(scenario, duration_s)
        check_scenario(scenario, where)  # with the study's length: the prices must cover it
        cases.append(Case(label, {"variant": label}, scenario.seed, scenario.model_dump_json(), None))
    return cases


def sensitivity(path: Path, cases: list, out_dir: Path, workers: int | None = None,
                log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run the cases of :func:`sensitivity_cases` as a sweep on dask.distributed.

    The same machinery as ``dercosim sweep`` (:mod:`.sweep`): one world per
    case on a LocalCluster, each case's run folder under ``out_dir/cases/``,
    ``sweep.parquet`` rewritten per finished case. Per variant: market
    revenue, imbalance cost, household bills, ``revenue_minus_bills`` (market
    revenue − imbalance − bills: the total revenue up to the s0 bill, which is
    the same for every variant), the mean |delivered − committed| /
    committed, the contract's late and lost messages, and ``status``/``error``
    (a failed case is recorded and the others go on).
    """
    from dercosim.studies.sweep import run_sweep

    swept = run_sweep(Path(path), cases, Path(out_dir), workers=workers or os.cpu_count() or 1, log=log)

    def num(row: Any, col: str) -> float | None:
        v = row[col]
        return None if v is None or pd.isna(v) else float(v)

    rows = []
    for _, r in swept.iterrows():
        revenue, imbalance, bills = num(r, "wholesale_revenue"), num(r, "imbalance_cost"), num(r, "bill_total")
        lost = [num(r, "contract_reports_lost"), num(r, "contract_replies_lost")]
        rows.append({"case": r["case"], "status": r["status"], "market_revenue": revenue,
                     "imbalance_cost": imbalance, "bill_total": bills,
                     "revenue_minus_bills": None if r["status"] != "ok" else
                     (revenue or 0.0) - (imbalance or 0.0) - (bills or 0.0),
                     "mean_abs_deviation_of_committed": num(r, "mean_abs_deviation_of_committed"),
                     "reports_late": num(r, "contract_reports_late"),
                     "messages_lost": None if r["status"] != "ok" else sum(v or 0.0 for v in lost),
                     "wall_s": num(r, "wall_s"), "error": r["error"]})
    return pd.DataFrame(rows)
