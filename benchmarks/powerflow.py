"""Per-step time of the fast power-flow engine vs pandapower.runpp, same 1,440 steps, one process.

    python benchmarks/powerflow.py [--steps 1440]

Injections: IEEE-33 base load with the BDEW daily shape, 64 households
(load − PV) from the default scenario's profiles. The naive baseline is what a
user would write first: set the loads on a pandapower net, call
``pandapower.runpp`` (numba off, as it is not a dependency). The fast engine
is dercosim's default (lightsim2grid model solved directly, warm start).
Goal: >= 500x at <= 1e-8 pu.
"""

from __future__ import annotations

import argparse
import time

from pathlib import Path

import numpy as np
import pandapower as pp

from dercosim.grids import ieee33
from dercosim.grids.powerflow import LightsimEngine
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1440)
    args = parser.parse_args()
    p, q = injections(args.steps)
    net = ieee33.make_net()
    fast = LightsimEngine(net)

    # Each engine runs the whole day in its own loop, as it would inside a run
    # (interleaving the two per step lets runpp evict the fast engine's caches).
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
    dv = np.abs(np.array(vm_fast) - np.array(vm_pp)).max(axis=1)

    med_fast, med_pp = np.median(t_fast), np.median(t_pp)
    print(f"steps                      {len(p)}")
    print(f"pandapower.runpp median    {med_pp * 1e3:9.3f} ms/step")
    print(f"fast engine median         {med_fast * 1e6:9.1f} us/step")
    print(f"ratio (runpp / fast)       {med_pp / med_fast:9.0f} x   (goal >= 500x)")
    print(f"max |dV| over all steps    {max(dv):9.2e} pu (goal <= 1e-8)")


if __name__ == "__main__":
    main()
