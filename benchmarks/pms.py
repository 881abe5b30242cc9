"""Cost per simulated day of the battery PMS loop, 70 batteries, at 1-s and 0.1-s cycles.

    python benchmarks/pms.py

Residuals: 70 PV households of a June day (dercosim's own load and PV
profiles) plus the seeded sub-minute fluctuation (0.3 kW, 10 s), all
following the residual (the rule-based HEMS). The naive baseline is the
cycle-by-cycle loop (vectorised over batteries); dercosim's default
``method="auto"`` computes every battery whose SoC bounds cannot bind within
the minute for all cycles at once. Both run the same inputs in one process;
the script prints seconds per simulated day, the ratio and the largest SoC
difference between the two.
"""

from __future__ import annotations

import time

import numpy as np

from dercosim.devices.battery import BatteryFleet, BatteryParams
from dercosim.timeseries import loads, pv, weather
from dercosim.timeseries.rng import DayStreams, rng_for
from dercosim.timeseries.subminute import SubminuteFluctuation

N = 70


def residuals() -> np.ndarray:
    site = weather.get_site("greensboro_tmy3")
    times = weather.time_index("2016-06-21", 1440, 60, site.tz)
    rng = rng_for(1, "bench")
    load = loads.household_load_kw(times, rng.uniform(2500, 5500, N), DayStreams(1, "load"))
    gen = pv.pv_ac_kw(site, times, rng.uniform(3, 8, N), np.full(N, 25.0), rng.uniform(120, 240, N),
                      DayStreams(1, "pv"))
    return load - gen


def run(residual: np.ndarray, cycle_s: float, method: str) -> tuple[float, float, np.ndarray]:
    params = BatteryParams.of(N, capacity_kwh=10.3, p_charge_max_kw=5.3, p_discharge_max_kw=5.3, eta_charge=0.9,
                              eta_discharge=0.9, soc_min_frac=0.0, soc_max_frac=1.0, self_discharge_per_h=0.0)
    fleet = BatteryFleet(params, np.full(N, 0.51 * 10.3), cycle_s=cycle_s)
    noise = SubminuteFluctuation(N, fleet.n_cycles, cycle_s, 0.3, 10.0, rng_for(1, "sub"))
    follow = np.ones(N, bool)
    zero = np.zeros(N)
    t_pms = t_noise = 0.0
    for minute in range(len(residual)):
        t0 = time.perf_counter()
        r = residual[minute][None, :] + noise.next_step()
        t1 = time.perf_counter()
        fleet.step(r, follow, zero, method=method)
        t2 = time.perf_counter()
        t_noise += t1 - t0
        t_pms += t2 - t1
    return t_pms, t_noise, fleet.soc_kwh


def main() -> None:
    residual = residuals()
    print(f"{N} batteries, one simulated day (1,440 steps of 60 s), following the residual")
    for cycle_s in (1.0, 0.1):
        loop_s, noise_s, soc_loop = run(residual, cycle_s, "loop")
        auto_s, _, soc_auto = run(residual, cycle_s, "auto")
        print(f"cycle {cycle_s:>4} s ({int(60 / cycle_s):>3} cycles/step): loop {loop_s:6.2f} s/day, "
              f"auto {auto_s:6.2f} s/day, ratio {loop_s / auto_s:5.1f}x, "
              f"sub-minute noise {noise_s:5.2f} s/day, max |dSoC| {np.abs(soc_loop - soc_auto).max():.1e} kWh")


if __name__ == "__main__":
    main()
