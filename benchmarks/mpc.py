"""Household MPC: the built-once parametric casadi QP vs an Opti problem rebuilt every call.

    python benchmarks/mpc.py [--households 70] [--period-s 120]

One MPC solve per household per period over a simulated June day, for 70
PV-battery households (dercosim's own load and PV profiles, linear-regression
forecasts, flat tariff, no market commitment). The battery state is advanced
with the built-once plan's first setpoint; the built-once OSQP problem and
the rebuilt path solve exactly the same inputs. Both in one process. Prints both medians, the ratio and the
largest difference in the first setpoint. Goal: <= 1 ms per solve, >= 15x,
first setpoints within 1e-3 kW.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dercosim.controllers.mpc import BatteryModel, MPCInputs, MPCProblem, solve_with_opti
from dercosim.timeseries import loads, pv, weather
from dercosim.timeseries.forecast import LinearRegression
from dercosim.timeseries.rng import DayStreams, rng_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--households", type=int, default=70)
    parser.add_argument("--period-s", type=int, default=120)
    args = parser.parse_args()
    n, period_min = args.households, args.period_s // 60
    site = weather.get_site("greensboro_tmy3")
    times = weather.time_index("2016-06-21", 1440, 60, site.tz)
    rng = rng_for(1, "bench-mpc")
    residual = (loads.household_load_kw(times, rng.uniform(2500, 5500, n), DayStreams(1, "load"))
                - pv.pv_ac_kw(site, times, rng.uniform(3, 8, n), np.full(n, 25.0), rng.uniform(120, 240, n),
                              DayStreams(1, "pv")))
    battery = BatteryModel(10.3, 5.3, 5.3, 0.9, 0.9, 0.0, 1.0)
    price, soc_value = 0.15, 0.95 * 0.9 * 0.15
    forecaster = LinearRegression(30)
    problems = [MPCProblem(battery, solver="piqp") for _ in range(n)]  # casadi's PIQP, one call at a time
    osqp_problems = [MPCProblem(battery, solver="osqp") for _ in range(n)]
    soc = np.full(n, 0.51 * battery.capacity_kwh)
    t_once, t_osqp, t_opti, diff, diff_osqp, failed = [], [], [], [], [], 0
    for k in range(0, 1440, period_min):
        h = 30 - k % 30
        for j in range(n):
            fc = forecaster.forecast(k, residual[:k + 1, j], h - 1)
            inp = MPCInputs(float(soc[j]), np.concatenate([[residual[k, j]], fc]), np.full(h, price),
                            soc_value_per_kwh=soc_value)
            t0 = time.perf_counter()
            plan = problems[j].solve(inp)
            t_once.append(time.perf_counter() - t0)
            warm = osqp_problems[j].solve(inp)
            t_osqp.append(warm.solve_s)
            if plan.success and warm.success:
                diff_osqp.append(abs(plan.setpoint_kw - warm.setpoint_kw))
            ref = solve_with_opti(problems[j], inp)
            t_opti.append(ref.solve_s)
            if plan.success and ref.success:
                diff.append(abs(plan.setpoint_kw - ref.setpoint_kw))
            else:
                failed += 1
            p = plan.setpoint_kw if plan.success else -residual[k, j]
            p = float(np.clip(p, -battery.p_discharge_max_kw, battery.p_charge_max_kw))
            delta = (0.9 * p if p > 0 else p / 0.9) * period_min / 60
            soc[j] = float(np.clip(soc[j] + delta, 0.0, battery.capacity_kwh))
    once, opti = np.median(t_once), np.median(t_opti)
    diff = np.array(diff)
    print(f"{n} households x {len(t_once) // n} solves (one per {args.period_s} s over a day)")
    print(f"built once (qpsol, PIQP)              median {once * 1e3:7.3f} ms   p95 {np.percentile(t_once, 95) * 1e3:6.2f} ms")
    print(f"built once (qpsol, OSQP, warm start)  median {np.median(t_osqp) * 1e3:7.3f} ms   p95 "
          f"{np.percentile(t_osqp, 95) * 1e3:6.2f} ms   first setpoint vs PIQP: max |diff| {max(diff_osqp):.1e} kW")
    print(f"Opti rebuilt every call               median {opti * 1e3:7.3f} ms   p95 {np.percentile(t_opti, 95) * 1e3:6.2f} ms")
    print(f"ratio                                  {opti / once:7.1f} x   (goal >= 15x; goal <= 1 ms per solve)")
    print(f"first setpoint |diff|                 max {diff.max():.1e} kW, 99th pct {np.percentile(diff, 99):.1e} kW, "
          f"share within 1e-3 kW {np.mean(diff <= 1e-3):.4f}; either path failed: {failed}")


if __name__ == "__main__":
    main()
