"""Day-ahead aggregator MILP: one virtual battery (K = 1) against the 70 individual batteries it stands for.

The fleet of ``fleet_market_uncoordinated`` (70 households with PV or small
wind and a 10.3-kWh battery each, the aggregator's PV plant and wind farm)
on its first day: perfect forecasts of demand and production, N2EX prices,
Agile Octopus import prices. dercosim plans with one virtual battery
(Couraud et al. 2022, eq. (3)); the reference is the same MILP with every
battery its own (charge/discharge binaries and SoC per battery, one fleet
balance), built and solved with HiGHS the same way, in the same process.
Printed: build and solve times of both, and the cost difference (how much
the aggregation gives away or promises that 70 separate batteries could not
deliver).

    .venv/bin/python benchmarks/aggregator.py
"""

from __future__ import annotations

import time
from pathlib import Path

import highspy
import numpy as np

from dercosim.markets.aggregator import DayAheadMILP, VirtualBattery
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.resolve import RunInputs

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "fleet_market_uncoordinated.toml"


def individual_milp(bats, demand, production, import_price, export_price, dt_h: float) -> tuple[float, float, float]:
    """The K-battery MILP: returns (build s, solve s, cost)."""
    started = time.perf_counter()
    n = len(demand)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-6)
    inf = highspy.kHighsInf
    big_m = float(np.max(np.abs(demand - production)) + 2 * bats["p_charge_max_kw"].sum() * dt_h + 1)
    imp = h.addVariables(n, lb=0, ub=inf, obj=[float(v) for v in import_price])
    exp = h.addVariables(n, lb=0, ub=inf, obj=[-float(v) for v in export_price])
    u = h.addVariables(n, lb=0, ub=1, type=highspy.HighsVarType.kInteger)
    charge, discharge = [], []
    for b in bats.itertuples():
        e = b.p_charge_max_kw * dt_h
        c = h.addVariables(n, lb=0, ub=e)
        d = h.addVariables(n, lb=0, ub=b.p_discharge_max_kw * dt_h)
        s = h.addVariables(n, lb=b.capacity_kwh * b.soc_min_frac, ub=b.capacity_kwh * b.soc_max_frac)
        y = h.addVariables(n, lb=0, ub=1, type=highspy.HighsVarType.kInteger)
        for t in range(n):
            prev = s[t - 1] if t else b.soc_init_kwh
            h.addConstr(s[t] == prev + b.eta_charge * c[t] - d[t] * (1.0 / b.eta_discharge))
            h.addConstr(c[t] <= e * y[t])
            h.addConstr(d[t] <= b.p_discharge_max_kw * dt_h * (1 - y[t]))
        h.addConstr(s[n - 1] >= b.soc_init_kwh)
        charge.append(c)
        discharge.append(d)
    for t in range(n):
        h.addConstr(imp[t] - exp[t] - sum(c[t] for c in charge) + sum(d[t] for d in discharge)
                    == float(demand[t] - production[t]))
        h.addConstr(imp[t] <= big_m * u[t])
        h.addConstr(exp[t] <= big_m * (1 - u[t]))
    built = time.perf_counter()
    h.run()
    solved = time.perf_counter()
    return built - started, solved - built, float(h.getInfo().objective_function_value)


def main() -> None:
    scenario = load_scenario(SCENARIO)
    m = scenario.market
    scenario = scenario.model_copy(update={"market": m.model_copy(
        update={"forecast": m.forecast.model_copy(update={"kind": "perfect"})})})
    run = RunInputs.resolve(scenario)
    inputs = run.market_inputs
    n = 48
    demand, production = inputs["demand_forecast_kwh"][:n], inputs["production_forecast_kwh"][:n]
    imp, wholesale = inputs["import_price"][:n], inputs["wholesale_price"][:n]
    bats = run.fleet.batteries
    started = time.perf_counter()
    vb = VirtualBattery.of_fleet(bats["capacity_kwh"], bats["p_charge_max_kw"], bats["p_discharge_max_kw"],
                                 bats["eta_charge"], bats["eta_discharge"], bats["soc_min_frac"], bats["soc_max_frac"])
    milp = DayAheadMILP(vb, n=n, dt_h=0.5)
    build_1 = time.perf_counter() - started
    plan = milp.solve(demand, production, imp, wholesale, float(bats["soc_init_kwh"].sum()))
    again = milp.solve(demand, production, imp, wholesale, float(bats["soc_init_kwh"].sum()))
    build_k, solve_k, cost_k = individual_milp(bats, demand, production, imp, wholesale, 0.5)
    print(f"{scenario.name}, first day, {n} half-hours, {len(bats)} batteries, perfect forecasts")
    print(f"K = 1  virtual battery    build {1000 * build_1:8.1f} ms  solve {1000 * plan.solve_s:8.1f} ms "
          f"(re-solve {1000 * again.solve_s:6.1f} ms)  cost {plan.cost:10.4f} {scenario.tariff.currency}")
    print(f"K = {len(bats)} batteries          build {1000 * build_k:8.1f} ms  solve {1000 * solve_k:8.1f} ms"
          f"                      cost {cost_k:10.4f} {scenario.tariff.currency}")
    print(f"ratio of solve times (K = {len(bats)} / K = 1): {solve_k / max(plan.solve_s, 1e-9):.0f}x;  "
          f"cost difference (virtual − individual): {plan.cost - cost_k:+.4f} "
          f"({100 * (plan.cost - cost_k) / abs(cost_k):+.3f} %)")


if __name__ == "__main__":
    main()
