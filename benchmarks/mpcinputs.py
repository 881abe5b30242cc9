"""The household MPC's own Python per call: its inputs one household at a time vs as arrays over the batch.

    python benchmarks/mpcinputs.py [--households 70,2000] [--calls 36]

Before every QP the MPC forecasts the household's residual (a least-squares line through its last 30 minutes)
and values the energy left in the battery at the end of the horizon (two price tiers over yesterday's same
steps). ``HouseholdMPC.step_many`` computes both as arrays over the households alike
(``HouseholdMPC._inputs_alike``); the baseline is ``HouseholdMPC._inputs`` one household after another, as
before. Both on the same bound controllers, side by side in one process: households with the bundled
``households_mpc`` battery, seeded residuals with a daily shape, two days observed, then ``--calls`` MPC calls
spread over the second day (each with its outlook). Prints µs per household call of each, the ratio and the
largest relative difference of their numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dercosim.controllers.mpc import HouseholdMPC


def controllers(n: int, residual: np.ndarray, prices: np.ndarray) -> list[HouseholdMPC]:
    battery = {"capacity_kwh": 10.3, "p_charge_max_kw": 5.3, "p_discharge_max_kw": 5.3, "eta_charge": 0.9,
               "eta_discharge": 0.9, "soc_min_frac": 0.0, "soc_max_frac": 1.0}
    ctrls = [HouseholdMPC() for _ in range(n)]
    for j, ctrl in enumerate(ctrls):
        ctrl.bind({"battery": battery, "import_price": prices, "start_s_of_day": 0, "load_kw": np.ones(len(prices)),
                   "pv_kw": np.zeros(len(prices)), "seed": 1, "household": f"h{j}"})
    for k in range(len(residual)):
        for j, ctrl in enumerate(ctrls):
            ctrl.observe(60 * k, {"net_kw": float(residual[k, j])})
    return ctrls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", default="70,2000")
    parser.add_argument("--calls", type=int, default=36)
    args = parser.parse_args()
    minute = np.arange(2 * 1440)
    prices = np.tile(np.where((np.arange(1440) >= 16 * 60) & (np.arange(1440) < 19 * 60), 0.30, 0.15), 3)
    print(f"{'households':>10} {'one by one':>12} {'as arrays':>12} {'ratio':>7}  largest difference")
    for n in (int(v) for v in args.households.split(",")):
        rng = np.random.default_rng(n)
        sun = np.clip(np.sin((minute % 1440 - 360) / 720 * np.pi), 0, None)
        residual = (rng.uniform(0.2, 0.8, n) - rng.uniform(1, 5, n) * sun[:, None]
                    + rng.normal(0, 0.3, (len(minute), n)))
        ctrls = controllers(n, residual[:1440], prices)
        alone, together, worst = 0.0, 0.0, 0.0
        calls = np.linspace(1440, 2 * 1440 - 2, args.calls).astype(int) // 2 * 2
        k_seen = 1440
        for k in calls:
            for kk in range(k_seen, k + 1):  # observe up to this call
                for j, ctrl in enumerate(ctrls):
                    ctrl.observe(60 * kk, {"net_kw": float(residual[kk, j])})
            k_seen = k + 1
            observed = [{"net_kw": float(residual[k, j]), "soc_kwh": 5.0, "vm_pu": 1.0} for j in range(n)]
            t0 = time.perf_counter()
            one = [ctrl._inputs(60 * int(k), obs) for ctrl, obs in zip(ctrls, observed)]
            t1 = time.perf_counter()
            arrays = HouseholdMPC._inputs_alike(ctrls, observed, 60 * int(k))
            t2 = time.perf_counter()
            alone += t1 - t0
            together += t2 - t1
            for (a, ra), (b, rb) in zip(one, arrays):
                worst = max(worst, float(np.max(np.abs(ra - rb) / np.maximum(np.abs(ra), 1e-12))))
                for name in ("soc_value_per_kwh", "soc_value_cap_kwh", "soc_value2_per_kwh", "soc_value2_cap_kwh"):
                    x, y = getattr(a, name), getattr(b, name)
                    worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
        per = 1e6 / (n * len(calls))
        print(f"{n:10d} {alone * per:10.1f} µs {together * per:10.1f} µs {alone / together:6.1f}x  {worst:.1e} relative")


if __name__ == "__main__":
    main()
