"""Where a simulated minute goes at 70, 500 and 2,000 households: mosaik, power flow, MPC, PMS, recorder.

    python benchmarks/scaling.py [--sizes 2,16,62] [--minutes 30] [--start-hour 11] [--qp-horizon remaining]
    python benchmarks/scaling.py --feeder simbench [--minutes 1440 --start-hour 0]

``households_mpc`` with every household given PV and a battery (so every one
runs the MPC, every 120 s), ``per_bus`` households on each of the 32 load
buses of IEEE-33 (2, 16, 62 → 64, 512, 1,984 households), from 11:00 on
21 June (``--start-hour``; ``--minutes 1440 --start-hour 0`` is a whole day). Each simulator's steps are timed by the real-time pacer
(``dercosim.sims.pacing``) at a factor so large that it never waits; the
rest of the loop's wall time is mosaik's own (scheduling, the input and
output dicts between simulators, each simulator's ``get_data``). Printed: ms
per simulated minute, split by simulator, the growth against the smallest
size per household, and the process's peak memory so far.

``--feeder simbench``: ``simbench_lv_households`` (118 households on SimBench's ``1-LV-rural3--0-sw``, 129 buses
behind a transformer) with PV and a battery on every household and the household MPC of ``households_mpc`` on
every battery, one size.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tomllib
from pathlib import Path

from dercosim.scenarios.bundled import bundled_scenarios
from dercosim.scenarios.config import Scenario
from dercosim.scenarios.world import run_scenario
from dercosim.sims.pacing import Pacer

COLUMNS = {"Grid": "power flow", "Controller": "MPC", "Battery": "PMS", "Recorder": "recorder",
           "Household": "households"}


def scenario(per_bus: int, minutes: int, start_hour: int = 11, qp_horizon: str = "interval") -> Scenario:
    data = tomllib.loads(bundled_scenarios()["households_mpc"].read_text())
    data["name"] = f"scaling_{per_bus}"
    data["clock"]["start"] = data["clock"]["start"].replace(hour=start_hour)
    data["clock"]["duration"] = f"{minutes}min"
    data["households"]["groups"][0].update(per_bus=per_bus, pv_share=1.0)
    data["hems"]["params"]["qp_horizon"] = qp_horizon
    s = Scenario.model_validate(data, strict=True)
    s._source_dir = bundled_scenarios()["households_mpc"].parent
    return s


def simbench(minutes: int, start_hour: int = 11, qp_horizon: str = "interval") -> Scenario:
    data = tomllib.loads(bundled_scenarios()["simbench_lv_households"].read_text())
    mpc = tomllib.loads(bundled_scenarios()["households_mpc"].read_text())
    data["name"] = "scaling_simbench"
    data["clock"]["start"] = data["clock"]["start"].replace(hour=start_hour)
    data["clock"]["duration"] = f"{minutes}min"
    data["households"]["groups"][0].update(pv_share=1.0)
    data["hems"] = {**mpc["hems"], "applies_to": "with_battery"}
    data["hems"]["params"]["qp_horizon"] = qp_horizon
    data["tariff"] = mpc["tariff"]
    s = Scenario.model_validate(data, strict=True, context={"source_dir": bundled_scenarios()["households_mpc"].parent})
    s._source_dir = bundled_scenarios()["households_mpc"].parent
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,16,62", help="households per bus (default 2,16,62)")
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--start-hour", type=int, default=11)
    ap.add_argument("--qp-horizon", choices=["interval", "remaining"], default="interval",
                    help="the MPC's QP size (the [hems.params] key; default: the scenario's default)")
    ap.add_argument("--feeder", choices=["ieee33", "simbench"], default="ieee33",
                    help="simbench: the SimBench LV scenario with the MPC on every battery (one size)")
    args = ap.parse_args(argv)
    print(f"{'households':>10} {'total':>8} {'mosaik':>8} " + " ".join(f"{c:>10}" for c in COLUMNS.values())
          + f" {'per hh':>8}   (ms per simulated minute; {args.minutes} min from {args.start_hour:02d}:00)")
    first = None
    sizes = [0] if args.feeder == "simbench" else [int(v) for v in args.sizes.split(",")]
    for per_bus in sizes:
        sc = (simbench(args.minutes, args.start_hour, args.qp_horizon) if args.feeder == "simbench"
              else scenario(per_bus, args.minutes, args.start_hour, args.qp_horizon))
        pacer = Pacer(factor=1e12, step_s=60, deadline_ms=1e12, say=lambda msg: None)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = run_scenario(sc, Path(tmp) / "run", progress=False, realtime=pacer)
            wall = time.perf_counter() - t0
        n_hh = res.summary["households"]["count"]
        loop_ms = 1000.0 * res.summary["run_wall_time_s"] / args.minutes
        per_sim = pacer.table().groupby("simulator").compute_ms.sum() / args.minutes
        parts = {c: float(per_sim.get(k, 0.0)) for k, c in COLUMNS.items()}
        mosaik_ms = loop_ms - sum(parts.values())
        per_hh = loop_ms / n_hh
        first = first or per_hh
        print(f"{n_hh:10d} {loop_ms:8.1f} {mosaik_ms:8.1f} " + " ".join(f"{v:10.1f}" for v in parts.values())
              + f" {per_hh:8.3f}   (set-up and report {wall - res.summary['run_wall_time_s']:.0f} s; "
              f"per household {per_hh / first:.2f}x the smallest; peak memory so far "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
