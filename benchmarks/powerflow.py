"""Per-step time of the fast power-flow engine vs pandapower.runpp, same steps, one process.

    python benchmarks/powerflow.py [--steps 1440] [--large-steps 120] [--large FEEDER ...]

Injections: IEEE-33 base load with the BDEW daily shape, 64 households
(load − PV) from the default scenario's profiles. The naive baseline is what a
user would write first: set the loads on a pandapower net, call
``pandapower.runpp`` (numba off, as it is not a dependency). The fast engine
is dercosim's default (lightsim2grid model solved directly, warm start).
Goal: >= 500x at <= 1e-8 pu (the feeder issue: at least 400x).

Then larger feeders (``--large``; default a SimBench MV feeder with its LV grids, 1,000+ buses, and the
907-bus IEEE European LV feeder): the case's own loads with a daily shape and a seeded ±30 % variation per bus
and step, ``--large-steps`` steps each.
"""

from __future__ import annotations

import argparse
import time

from pathlib import Path

import numpy as np
import pandapower as pp

from dercosim.grids import ieee33
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.resolve import RunInputs
from dercosim.scenarios.world import with_duration


def injections(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    scenario = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "ieee33_households.toml")
    run = RunInputs.resolve(with_duration(scenario, n_steps * 60))
    table, load_kw, pv_kw, shape = run.fleet.households, run.load_kw, run.pv_kw, run.base_shape
    p0, q0 = ieee33.base_load_kw()
    p = np.outer(shape, p0)
    q = np.outer(shape, q0)
    tan_phi = np.tan(np.arccos(table.power_factor.to_numpy()))
    for j, bus in enumerate(table.bus):
        p[:, bus - 1] += load_kw[:, j] - pv_kw[:, j]
        q[:, bus - 1] += load_kw[:, j] * tan_phi[j]
    return p, q


def time_both(net, p: np.ndarray, q: np.ndarray) -> tuple[float, float, float]:
    """Median seconds per step of the fast engine (dercosim's make_engine) and of runpp on the same steps of
    ``net``, and the largest voltage difference between them (pu). Each engine runs all the steps in its own
    loop, as it would inside a run (interleaving the two per step lets runpp evict the fast engine's caches)."""
    from dercosim.grids.powerflow import make_engine

    fast = make_engine("fast", net)
    t_fast, vm_fast = [], []
    for k in range(len(p)):
        t0 = time.perf_counter()
        r = fast.solve(p[k], q[k])
        t_fast.append(time.perf_counter() - t0)
        vm_fast.append(r.vm_pu)
    t_pp, vm_pp = [], []
    for k in range(len(p)):
        t0 = time.perf_counter()
        net.load["p_mw"] = p[k] / 1000.0
        net.load["q_mvar"] = q[k] / 1000.0
        pp.runpp(net, numba=False)
        vm_pp.append(net.res_bus.vm_pu.to_numpy(copy=True))
        t_pp.append(time.perf_counter() - t0)
    dv = float(np.abs(np.array(vm_fast) - np.array(vm_pp)).max())
    return float(np.median(t_fast)), float(np.median(t_pp)), dv


def large(spec: str, n_steps: int) -> None:
    from dercosim.grids.feeders import load_feeder

    f = load_feeder(spec)
    rng = np.random.default_rng(0)
    shape = 0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, n_steps, endpoint=False)) ** 2
    vary = 1.0 + 0.3 * (2 * rng.random((n_steps, f.n_bus)) - 1)
    net = f.make_net()
    med_fast, med_pp, dv = time_both(net, np.outer(shape, f.base_p_kw) * vary, np.outer(shape, f.base_q_kvar) * vary)
    print(f"{f.title}: {len(net.bus)} buses, {n_steps} steps: runpp {med_pp * 1e3:.2f} ms/step, fast "
          f"{med_fast * 1e3:.3f} ms/step, ratio {med_pp / med_fast:.0f} x, max |dV| {dv:.1e} pu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1440)
    parser.add_argument("--large-steps", type=int, default=120)
    parser.add_argument("--large", nargs="*", default=["1-MVLV-semiurb-all-0-sw", "ieee_european_lv_asymmetric"])
    args = parser.parse_args()
    p, q = injections(args.steps)
    med_fast, med_pp, dv = time_both(ieee33.make_net(), p, q)
    print(f"steps                      {len(p)}")
    print(f"pandapower.runpp median    {med_pp * 1e3:9.3f} ms/step")
    print(f"fast engine median         {med_fast * 1e6:9.1f} us/step")
    print(f"ratio (runpp / fast)       {med_pp / med_fast:9.0f} x   (goal >= 500x)")
    print(f"max |dV| over all steps    {dv:9.2e} pu (goal <= 1e-8)")
    for spec in args.large:
        large(spec, args.large_steps)


if __name__ == "__main__":
    main()
