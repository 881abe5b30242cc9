"""The household MPC's QPs of an s4 run: the interior point against PIQP through casadi, CPU and tolerances.

    python benchmarks/solverfloor.py [--minutes 60] [--start-hour 10] [--big 2000]

Runs ``fleet_market_s4`` for ``--minutes`` from ``--start-hour`` on 1 June
2016 with its default solver (dercosim's interior point,
``dercosim.controllers.ipm``) and keeps every batch of QPs the MPC solved.
Then solves the same QPs again, side by side in this process, all on one
thread (CPU per QP):

- the interior point, one batch at a time (array building included);
- PIQP through casadi, one QP at a time;
- PIQP through casadi in one ``map`` per batch, as ``qp_solver = "piqp"``
  runs;
- both again on the run's QPs joined into batches of ``--big`` (the batch
  a fleet of ~2,000 homes hands the solver);
- the interior point on two threads, wall time: its kernels split inside
  one call (what the MPC does) against the batch cut in halves solved whole
  in a thread each (what it did before).

Then the tolerances the interior point is held to, on every QP: the bound
and row violation, the objective's relative difference from PIQP's
(p99, worst), and the share of first setpoints within 1e-2 kW of PIQP's at
its default tolerances and of PIQP's run to 1e-11 (the optimum is flat:
the regularisation is 3.3e-5 per kW², so an exact solver pins the setpoint
only to about its tolerance / (reg · dt)). Goals: ≥ 5× less CPU per QP
than the ``map``, at both batch sizes; bounds within 1e-9; objective within
1e-6 at p99 and 1e-4 at worst; ≥ 99 % of setpoints within 1e-2 kW.

Also prints the captured run's loop time per simulated minute and the
solves' share of it (the rest of a minute waits for the setpoints).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import dercosim.controllers.mpc as mpc
from dercosim.controllers import ipm
from dercosim.controllers.mpc import MPCInputs, MPCProblem
from dercosim.scenarios.world import run_scenario
from fullstack import scenario  # benchmarks/fullstack.py, beside this file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--start-hour", type=int, default=10)
    parser.add_argument("--big", type=int, default=2000, help="QPs per batch in the large-batch comparison")
    args = parser.parse_args()
    batches: list[tuple[tuple, np.ndarray]] = []
    solve_s = 0.0
    real = MPCProblem._solve_ipm

    def recording(problems: list[MPCProblem], inputs: list[MPCInputs], threads: int) -> list[mpc.Plan]:
        nonlocal solve_s
        batches.append((problems[0].key, problems[0].compact_columns(inputs)))
        started = time.perf_counter()
        plans = real(problems, inputs, threads)
        solve_s += time.perf_counter() - started
        return plans

    s = scenario(args.start_hour, args.minutes, naive=False)
    MPCProblem._solve_ipm = staticmethod(recording)  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_scenario(s, Path(tmp) / "run", progress=False).summary
    finally:
        MPCProblem._solve_ipm = staticmethod(real)  # type: ignore[method-assign]
    if not batches:
        raise SystemExit("no MPC batch was solved in these minutes")
    n_qp = sum(c.shape[1] for _, c in batches)

    def ipm_solve(key: tuple, compact: np.ndarray) -> ipm.BatchResult:
        battery, h, dt_h, _, weights = key
        return ipm.solve_compact(compact, battery, h, dt_h, weights)

    ipm_solve(*batches[0])  # the compiled kernels loaded (from numba's cache, or compiled: ~10 s once)
    t_ipm, t_one, t_map = 0.0, 0.0, 0.0
    ours, ref = [], []
    for key, compact in batches:
        started = time.perf_counter()
        res = ipm_solve(key, compact)
        t_ipm += time.perf_counter() - started
        started = time.perf_counter()
        solved = mpc._solve_batch(key, "piqp", 1, compact)
        t_map += time.perf_counter() - started
        single = mpc._batch_function(key, "piqp")
        started = time.perf_counter()
        for j in range(compact.shape[1]):
            single(compact[:, j])
        t_one += time.perf_counter() - started
        if solved is None:
            raise SystemExit("PIQP failed on a QP of the run")
        ours.append(res)
        ref.append(solved)

    # the same QPs in batches of --big (one problem key per batch)
    by_key: dict[tuple, list[np.ndarray]] = {}
    for key, compact in batches:
        by_key.setdefault(key, []).append(compact)
    t_ipm_big, t_map_big, n_big = 0.0, 0.0, 0
    for key, parts in by_key.items():
        joined = np.concatenate(parts, axis=1)
        for start in range(0, joined.shape[1] - args.big + 1, args.big):
            chunk = np.ascontiguousarray(joined[:, start:start + args.big])
            mpc._solve_batch(key, "piqp", 1, chunk[:, :1])  # casadi's map of this size built outside the timing
            mpc._batch_function(key, "piqp").map(args.big)
            started = time.perf_counter()
            ipm_solve(key, chunk)
            t_ipm_big += time.perf_counter() - started
            started = time.perf_counter()
            mpc._solve_batch(key, "piqp", 1, chunk)
            t_map_big += time.perf_counter() - started
            n_big += args.big

    # the run's batches over two threads, wall time: the kernels split inside one call (what the MPC does) against
    # the batch cut in two halves, each solved whole in a thread (what it did before: the arrays around the
    # kernels hold the GIL, so the halves wait for each other)
    pool = ipm.thread_pool(1)
    t_split, t_halves = 0.0, 0.0
    for _ in range(3):
        for key, compact in batches:
            battery, h, dt_h, _, weights = key
            started = time.perf_counter()
            ipm.solve_compact(compact, battery, h, dt_h, weights, threads=2)
            t_split += time.perf_counter() - started
            started = time.perf_counter()
            halves = np.array_split(np.arange(compact.shape[1]), 2)
            other = pool.submit(ipm_solve, key, compact[:, halves[1]])
            ipm_solve(key, compact[:, halves[0]])
            other.result()
            t_halves += time.perf_counter() - started

    rel, kw, kw_tight, worst, n_tight, failed = [], [], [], -np.inf, 0, 0
    for (key, compact), res, (xs, fs, _) in zip(batches, ours, ref):
        h = key[1]
        ok = res.status == ipm.SOLVED
        failed += int((~ok).sum())
        rel.append(np.abs(res.objective[ok] - fs[ok]) / np.maximum(np.abs(fs[ok]), 1e-2))
        first = res.x[ok, 0] - res.x[ok, h]
        kw.append(np.abs(first - (xs[ok, 0] - xs[ok, h])))
        worst = max(worst, float(mpc.bound_violation(key, compact[:, ok], res.x[ok]).max()))
        xt = mpc.piqp_reference(key, compact[:, ok])
        kw_tight.append(np.abs(first - (xt[:, 0] - xt[:, h])))
        n_tight += int(ok.sum())
    r, k, kt = np.concatenate(rel), np.concatenate(kw), np.concatenate(kw_tight)
    its = np.concatenate([res.iterations[res.status == ipm.SOLVED] for res in ours])
    size = max(c.shape[1] for _, c in batches)

    print(f"fleet_market_s4, the MPC's QPs of {args.minutes} simulated minutes from {args.start_hour:02d}:00 on "
          f"1 June 2016: {n_qp:,} QPs in {len(batches)} batches of up to {size}; CPU per QP, one thread")
    print(f"PIQP through casadi, one QP at a time           {1e3 * t_one / n_qp:7.3f} ms")
    print(f"PIQP through casadi, map per batch (<= {size:4d})   {1e3 * t_map / n_qp:7.3f} ms")
    print(f"interior point, per batch (<= {size:4d})            {1e3 * t_ipm / n_qp:7.3f} ms   "
          f"{t_map / t_ipm:5.1f}x less than the map, {t_one / t_ipm:5.1f}x less than one at a time")
    if n_big:
        print(f"PIQP through casadi, map per batch of {args.big}    {1e3 * t_map_big / n_big:7.3f} ms")
        print(f"interior point, per batch of {args.big}             {1e3 * t_ipm_big / n_big:7.3f} ms   "
              f"{t_map_big / t_ipm_big:5.1f}x less than the map ({n_big:,} QPs)")
    else:
        print(f"(fewer than {args.big} QPs captured: no large-batch comparison; run more --minutes)")
    print(f"two threads, wall per QP: kernels split in one call {1e3 * t_split / (3 * n_qp):7.3f} ms, halves solved "
          f"whole {1e3 * t_halves / (3 * n_qp):7.3f} ms ({t_halves / t_split:4.2f}x)")
    print(f"interior point: {failed} QP(s) not converged (the run retries those with PIQP); iterations median "
          f"{np.median(its):.0f}, max {its.max()}")
    print(f"worst bound or row violation {worst:.1e} (goal <= 1e-9)")
    print(f"objective relative difference from PIQP: p99 {np.quantile(r, 0.99):.1e} (goal <= 1e-6), "
          f"worst {r.max():.1e} (goal <= 1e-4)")
    print(f"first setpoint within 1e-2 kW: of PIQP's {100 * (k <= 1e-2).mean():.2f} %, of PIQP's run to 1e-11 "
          f"{100 * (kt <= 1e-2).mean():.2f} % (goal >= 99 %)")
    print(f"the run: {summary['ms_per_step']:.1f} ms per simulated minute, of which the solves "
          f"{1e3 * solve_s / args.minutes:.1f} ms "
          f"({100 * solve_s / (summary['ms_per_step'] * args.minutes / 1e3):.0f} %)")


if __name__ == "__main__":
    main()
