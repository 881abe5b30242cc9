"""How much of an s4 day the MPC's QP solves take on this machine, whatever else gets faster.

    python benchmarks/solverfloor.py [--minutes 60] [--start-hour 10]

Runs ``fleet_market_s4`` for ``--minutes`` from ``--start-hour`` on 1 June
2016 and keeps every batch of QPs the MPC solved (the compact columns its
casadi ``map`` takes). Then solves the same batches again, PIQP through
casadi as the run does:

- one QP at a time, on one thread: the CPU a QP costs;
- as the run does, in one ``map`` over ``[hems] threads`` threads.

Prints the time per QP of each and what a simulated day of the scenario
needs: the number of QPs (households with the MPC × calls per day), their
CPU time, and the least wall time they can take on the threads used. The
other simulators cannot run beside the solves (the batteries, the power
flow and the next minute wait for the setpoints), so this is a floor under
a day's wall time. Also prints the captured run's loop time per minute and
the solves' share of it. The solves are checked to give the run's numbers
to the bit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import dercosim.controllers.mpc as mpc
from fullstack import scenario  # benchmarks/fullstack.py, beside this file
from dercosim.scenarios.world import run_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--start-hour", type=int, default=10)
    args = parser.parse_args()
    batches: list[tuple[tuple, str, int, np.ndarray, np.ndarray]] = []
    solve_s = 0.0
    solve_batch = mpc._solve_batch

    def recording(key: tuple, name: str, threads: int, compact: np.ndarray):  # the run's own call, kept
        nonlocal solve_s
        started = time.perf_counter()
        solved = solve_batch(key, name, threads, compact)
        solve_s += time.perf_counter() - started
        if solved is not None:
            batches.append((key, name, threads, compact.copy(), solved[0].copy()))
        return solved

    s = scenario(args.start_hour, args.minutes, naive=False)
    mpc._solve_batch = recording
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_scenario(s, Path(tmp) / "run", progress=False).summary
    finally:
        mpc._solve_batch = solve_batch
    if not batches:
        raise SystemExit("no MPC batch was solved in these minutes")
    n_qp = sum(b[3].shape[1] for b in batches)
    threads = batches[0][2]

    one_s = 0.0
    for key, name, _, compact, xs in batches:
        single = mpc._batch_function(key, name)
        started = time.perf_counter()
        alone = [single(compact[:, j])[0] for j in range(compact.shape[1])]
        one_s += time.perf_counter() - started
        if not all(np.array_equal(np.asarray(x).ravel(), row) for x, row in zip(alone, xs)):
            raise SystemExit("a QP solved alone differs from the run's answer")
    started = time.perf_counter()
    for key, name, th, compact, xs in batches:
        again = mpc._solve_batch(key, name, th, compact)
        if again is None or not np.array_equal(again[0], xs):
            raise SystemExit("a batch solved again differs from the run's answer")
    batch_s = time.perf_counter() - started

    households = max(b[3].shape[1] for b in batches)  # s4's MPCs share their period: all are due together
    period_s = int(s.hems.params.get("period_s", 120))
    per_day = households * 86400 // period_s
    cpu_per_qp = one_s / n_qp
    print(f"fleet_market_s4, the MPC's QPs of {args.minutes} simulated minutes from {args.start_hour:02d}:00 on "
          f"1 June 2016: {n_qp:,} QPs in {len(batches)} batches")
    print(f"one QP at a time, one thread              {1e3 * cpu_per_qp:7.3f} ms per QP")
    print(f"the run's batches, {threads} thread(s)            {1e3 * batch_s / n_qp:7.3f} ms per QP "
          f"({one_s / batch_s:.2f}x)")
    print(f"a day: {per_day:,} QPs ({households} households every {period_s} s): "
          f"{per_day * cpu_per_qp:.1f} s of CPU, at least {per_day * batch_s / n_qp:.1f} s of wall time "
          f"on {threads} thread(s)")
    print(f"the run: {summary['ms_per_step']:.1f} ms per simulated minute, of which the solves "
          f"{1e3 * solve_s / args.minutes:.1f} ms ({100 * solve_s / (summary['ms_per_step'] * args.minutes / 1e3):.0f} %)")


if __name__ == "__main__":
    main()
