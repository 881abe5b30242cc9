"""The whole s4 loop, dercosim's stack against the naive one, same hours, same process.

    python benchmarks/fullstack.py [--minutes 30] [--start-hour 10] [--repeat 3] [--scaling]

Runs ``fleet_market_s4`` (70 households, MPC every 2 min, contract every
5 min, market every 30 min, AC power flow every minute, PMS at 1 s) from
``--start-hour`` on 1 June 2016 for ``--minutes``, twice:

- dercosim: the household QPs of each MPC call batched and solved by
  dercosim's interior point (``qp_solver = "ipm"``, PIQP as its fallback),
  the lightsim2grid power flow;
- naive: every MPC call written in ``casadi.Opti`` and rebuilt
  (``qp_solver = "opti_rebuilt"``, OSQP, no retry) and ``pandapower.runpp``
  every minute (``[grid] engine = "pandapower"``).

Prints the wall time per simulated minute of each (mosaik loop only, without
set-up and reporting; dercosim's is the median of ``--repeat`` runs, each
printed: its 30 minutes take ~0.16 s, where one hiccup of a shared machine
is 10 %), the ratio (goal: >= 500x), and how far the two runs
end apart (battery SoC, bus voltages): they share every input, so what
differs is solver tolerance and the naive path's OSQP failures (each falls
back to following the residual). ``--scaling`` then prints the scaling
table of ``benchmarks/scaling.py`` (64, 512 and 1,984 households: ms per
simulated minute split into mosaik, power flow, MPC, PMS and recorder).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dercosim.scenarios.bundled import bundled_scenarios
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario, with_duration


def scenario(start_hour: int, minutes: int, naive: bool):
    s = load_scenario(bundled_scenarios()["fleet_market_s4"])
    s = s.model_copy(update={"clock": s.clock.model_copy(update={"start": s.clock.start.replace(hour=start_hour)})})
    if naive:
        s = s.model_copy(update={
            "grid": s.grid.model_copy(update={"engine": "pandapower"}),
            "hems": s.hems.model_copy(update={"params": {**s.hems.params, "qp_solver": "opti_rebuilt"}})})
    return with_duration(s, 60 * minutes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--start-hour", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="dercosim's runs (the median is taken)")
    parser.add_argument("--scaling", action="store_true", help="then the scaling table (benchmarks/scaling.py)")
    args = parser.parse_args()
    runs = {}
    fast_ms = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, naive, repeat in (("dercosim", False, max(args.repeat, 1)), ("naive", True, 1)):
            for k in range(repeat):
                result = run_scenario(scenario(args.start_hour, args.minutes, naive), Path(tmp) / f"{name}{k}",
                                      progress=False)
                if not naive:
                    fast_ms.append(result.summary["ms_per_step"])
                if k == 0:
                    df = pd.read_parquet(result.parquet, columns=["time_s", "kind", "entity", "soc_kwh", "vm_pu",
                                                                  "fallback"])
                    runs[name] = (result.summary, df)
    ms = {n: s["ms_per_step"] for n, (s, _) in runs.items()}
    ms["dercosim"] = float(np.median(fast_ms))
    (_, fast), (_, slow) = runs["dercosim"], runs["naive"]
    soc = [d[d.kind == "battery"].pivot(index="time_s", columns="entity", values="soc_kwh") for d in (fast, slow)]
    vm = [d[d.kind == "bus"].pivot(index="time_s", columns="entity", values="vm_pu") for d in (fast, slow)]
    fallbacks = int(slow.loc[slow.kind == "controller", "fallback"].fillna(0).sum())
    print(f"fleet_market_s4, {args.minutes} simulated minutes from {args.start_hour:02d}:00 on 1 June 2016")
    print(f"dercosim (batched interior-point MPC, lightsim2grid) {ms['dercosim']:9.1f} ms per simulated minute "
          f"(median of {', '.join(f'{m:.1f}' for m in fast_ms)})")
    print(f"naive (Opti rebuilt per call, pandapower.runpp)     {ms['naive']:9.1f} ms per simulated minute "
          f"({fallbacks} OSQP failures fell back)")
    print(f"ratio                                               {ms['naive'] / ms['dercosim']:9.1f} x   (goal >= 500x)")
    print(f"largest difference: battery SoC {np.nanmax(np.abs(soc[0] - soc[1]).to_numpy()):.3f} kWh, "
          f"bus voltage {np.nanmax(np.abs(vm[0] - vm[1]).to_numpy()):.2e} pu")
    if args.scaling:
        import scaling  # benchmarks/scaling.py, beside this file

        scaling.main([])


if __name__ == "__main__":
    main()
