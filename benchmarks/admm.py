"""Value-stacking ADMM: wall time per iteration and to convergence, and how it grows with communities.

    python benchmarks/admm.py [--sizes 6,12,24,48] [--iterations 20]

The problem is the first day of ``scenarios/value_stacking_tou.toml`` (six
communities, the scenario's seeded fleet). For N > 6 the six communities are
cloned onto further buses (cycling over buses 2–33) with their loads, PV,
batteries and HVAC scaled by 6/N, so the feeder carries the same community
energy whatever N. Synchronous mode, no latency, ρ = 0.01.

dercosim's path: community QPs on OSQP (built once, warm-started) and the
grid operator's z-update split into 24 hourly projections that share one
matrix (daqp). The naive baseline, run side by side in the same process:
community QPs on HiGHS and the operator's projection as one QP over all
hours (OSQP), both also built once. Per-iteration times are from
``--iterations`` iterations with the stopping test switched off. Goal:
per-iteration time near-linear in N (growth ratio ≈ N/6), and the naive
baseline several times slower.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm import ADMMSettings, Latency, run_admm
from dercosim.planning.admm.qp import SparseQP
from dercosim.planning.valuestack import CentralQP, Community, CommunityQP, GridOperatorQP, network_rows
from dercosim.scenarios.planner_case import case_from_scenario
from dercosim.scenarios.load import load_scenario
SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "value_stacking_tou.toml"


class MonolithicOperator:
    """The naive z-update: one projection QP over every hour and community (same answer as the hourly split)."""

    def __init__(self, feeder, buses: list[int], h: int, solver: str = "osqp") -> None:  # noqa: ANN001
        a, self.lo, self.hi, _ = network_rows(feeder, [b - 1 for b in buses], h)
        scale = 1.0 / np.maximum(np.sqrt(np.asarray(a.multiply(a).sum(axis=1))).ravel(), 1e-12)
        self.scale = scale
        a_s = sp.csc_matrix(a.multiply(scale[:, None]))
        self.n, self.size = a.shape[1], 5 * h
        self.qp = SparseQP(sp.identity(self.n, format="csc"), a_s, solver)
        self.h = self.qp.hessian(sp.identity(self.n))

    def solve(self, x: list[np.ndarray], lam: list[np.ndarray], rho: float) -> list[np.ndarray]:
        v = np.concatenate(x) + np.concatenate(lam) / rho
        sol = self.qp.solve(self.h, -v, self.lo * self.scale, self.hi * self.scale, np.zeros(self.n),
                            np.full(self.n, np.inf))
        return list(sol.u.reshape(len(x), self.size))


def scaled_fleet(comms: list[Community], n: int) -> list[Community]:
    """``n`` communities: the six cloned over buses 2–33, each scaled by 6/n."""
    if n == len(comms):
        return list(comms)
    f = len(comms) / n
    used = [c.bus for c in comms]
    spare = [b for b in range(2, 34) if b not in used]
    out = []
    for k in range(n):
        c = comms[k % len(comms)]
        bus = c.bus if k < len(comms) else spare[(k - len(comms)) % len(spare)]
        out.append(replace(
            c, name=f"{c.name}_{k}", bus=bus, load_kw=c.load_kw * f, pv_kw=c.pv_kw * f, q_kvar=c.q_kvar * f,
            soc_max_kwh=c.soc_max_kwh * f, soc_min_kwh=c.soc_min_kwh * f, soc_init_kwh=c.soc_init_kwh * f,
            p_charge_max_kw=c.p_charge_max_kw * f, p_discharge_max_kw=c.p_discharge_max_kw * f, p_b2b_max_kw=c.p_b2b_max_kw * f,
            p_b2g_max_kw=c.p_b2g_max_kw * f, p_et_max_kw=c.p_et_max_kw * f, hvac_p_max_kw=c.hvac_p_max_kw * f,
            hvac_c_kwh_per_c=c.hvac_c_kwh_per_c * f, hvac_r_c_per_kw=c.hvac_r_c_per_kw / f))
    return out


def build(comms: list[Community], market, feeder, naive: bool):  # noqa: ANN001, ANN201
    h = comms[0].horizon
    if naive:
        agents = [CommunityQP(c, market, solver="highs", fallback=None) for c in comms]
        return agents, MonolithicOperator(feeder, [c.bus for c in comms], h)
    return [CommunityQP(c, market) for c in comms], GridOperatorQP(feeder, [c.bus for c in comms], h)


def per_iteration_ms(comms, market, feeder, naive: bool, iterations: int) -> float:  # noqa: ANN001
    agents, operator = build(comms, market, feeder, naive)
    st = ADMMSettings(mode="sync", rho=0.01, eps_abs=1e-12, max_iter=iterations, latency=Latency())
    res = run_admm(agents, operator, st)
    return 1000.0 * res.wall_s / res.iterations


def to_convergence(comms, market, feeder, naive: bool) -> tuple[int, float, float]:  # noqa: ANN001
    agents, operator = build(comms, market, feeder, naive)
    st = ADMMSettings(mode="sync", rho=0.01, eps_abs=0.01, eps_rel=0.0, max_iter=1000, latency=Latency())
    res = run_admm(agents, operator, st)
    objective = float(sum(a.objective() for a in agents))
    return res.iterations, res.wall_s, objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6,12,24,48", help="numbers of communities")
    parser.add_argument("--iterations", type=int, default=20, help="iterations timed per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    comms, market, feeder = case_from_scenario(load_scenario(SCENARIO)).problem(0, 24)

    print("to convergence, 6 communities, sync, ρ = 0.01, ε = 0.01 (stopping on ‖x − z‖ and ‖z − z_prev‖):")
    central = CentralQP(comms, market, feeder).solve()
    t0 = time.perf_counter()
    CentralQP(comms, market, feeder).solve()
    central_s = time.perf_counter() - t0
    results = {}
    for naive in (False, True):
        it, wall, obj = to_convergence(comms, market, feeder, naive)
        results[naive] = wall
        gap = 100.0 * (obj - central.objective) / abs(central.objective)
        print(f"  {'naive baseline' if naive else 'dercosim      '}  {it:4d} iterations  {wall:7.2f} s  "
              f"{1000 * wall / it:6.1f} ms/iteration  gap to centralised {gap:+.4f} %")
    print(f"  ratio naive / dercosim: {results[True] / results[False]:.1f} x   "
          f"(centralised QP, ipopt: {central_s:.2f} s)")

    print(f"\nper iteration ({args.iterations} iterations, stopping test off), communities cloned and scaled:")
    print(f"  {'N':>4} {'dercosim ms':>12} {'per community':>14} {'naive ms':>10} {'naive/dercosim':>15}")
    rows = []
    for n in sizes:
        fleet = scaled_fleet(comms, n)
        ours = per_iteration_ms(fleet, market, feeder, False, args.iterations)
        base = per_iteration_ms(fleet, market, feeder, True, args.iterations)
        rows.append((n, ours, base))
        print(f"  {n:4d} {ours:12.1f} {ours / n:14.2f} {base:10.1f} {base / ours:14.1f}x", flush=True)
    (n0, o0, b0), (n1, o1, b1) = rows[0], rows[-1]
    print(f"\ngrowth {n0} -> {n1} communities ({n1 / n0:.0f}x): dercosim {o1 / o0:.1f}x per iteration, "
          f"naive {b1 / b0:.1f}x   (goal: near-linear, about {n1 / n0:.0f}x)")


if __name__ == "__main__":
    main()
