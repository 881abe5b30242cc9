"""The learning environment's cost: environment steps per second against a plain run of the same world.

    python benchmarks/gym.py                       # 1, 10, 64 households on IEEE-33 and on s4; 6-h episodes
    python benchmarks/gym.py --episode 30min --sizes 1 10

For each world and number of controlled households the same episode runs twice, side by side in this process:
through :class:`dercosim.gym.DercosimEnv` (the world in a worker thread, every step an exchange of observations
and actions, the reward computed), and as a plain run of the same world in which those households hold the same
setpoints from an in-process controller (``HoldController``, the same simulators and connections, no exchange).
Both include building the world. Recording off (the environment's default) and on. Each pair runs ``--repeat``
times, alternating, and the fastest of each counts (the machine's noise is one-sided). The ratio env/plain is
the interface's cost, in wall time and in CPU time (this process's: the world runs in a greenlet of the same
thread, so CPU time counts all of it and little of the machine's noise); the goal is at most 1.20.

Worlds: ``households_pv_battery`` with a battery in all 64 households (the default feeder, IEEE-33, 1-s PMS,
rule-based for the rest), and Couraud et al. 2022's scenario 4 (``fleet_market_s4``: 70 batteries, market,
smart contract every 5 min, MPC for the households the agent does not control) from 10:00.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import dercosim as dc
from dercosim.gym import DercosimEnv
from dercosim.scenarios.world import AgentHook, run_scenario, with_clock


def world(name: str, episode_s: int):
    if name == "ieee33":
        sc = dc.load("households_pv_battery")
        sc.set("batteries.groups[0].households", "all")
        sc.set("clock.start", "2016-06-21T10:00")
    else:
        sc = dc.load("fleet_market_s4")
        sc.set("clock.start", "2016-06-21T10:00")
    sc.set("clock.duration", episode_s)
    return sc


def through_env(sc, n: int, episode_s: int, record: bool, runs: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, steps) of one episode through the environment, zero actions."""
    env = DercosimEnv(sc, households=n, episode=episode_s, record=record, runs_dir=runs)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    wall, cpu = time.perf_counter(), time.process_time()
    env.reset(options={"episode": 0})
    steps, done = 0, False
    while not done:
        _, _, _, done, _ = env.step(action)
        steps += 1
    env.close()
    return time.perf_counter() - wall, time.process_time() - cpu, steps


def plain(sc, env_like: DercosimEnv, record: bool, out: Path) -> tuple[float, float]:
    """The same world and episode (one step longer, the last not recorded, as the environment runs it) with the
    controlled households on HoldController: (wall s, CPU s)."""
    episode = with_clock(sc, duration=env_like.episode_s + sc.clock.step_s)
    hook = AgentHook(spec="dercosim.gym.bridge:HoldController", households=list(env_like.households),
                     params_of=lambda h: {"inputs": env_like._inputs[h], "outputs": env_like._outputs[h],
                                          "period_s": env_like.period_s},
                     record_until_s=env_like.episode_s)
    wall, cpu = time.perf_counter(), time.process_time()
    run_scenario(episode, out, progress=False, plots=False, agent=hook, record=record)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episode", default="6h")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 64])
    parser.add_argument("--worlds", nargs="+", default=["ieee33", "s4"], choices=["ieee33", "s4"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from dercosim.scenarios.config import parse_duration_s

    episode_s = parse_duration_s(args.episode)
    print(f"episodes of {episode_s} s; env = DercosimEnv, plain = the same world with HoldController; "
          f"wall time per episode including building the world")
    print(f"{'world':8} {'households':>10} {'record':>6} {'env steps/s':>12} {'plain steps/s':>14} "
          f"{'env/plain wall':>15} {'env/plain CPU':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        warm = world("ieee33", 600)  # imports, the feeder's preparation, caches: not in the figures
        through_env(warm, 1, 600, False, runs / "warm")
        for name in args.worlds:
            sc = world(name, episode_s)
            for n in args.sizes:
                probe = DercosimEnv(sc, households=n, episode=episode_s)
                for record in (False, True):
                    best = {"plain": [np.inf, np.inf], "env": [np.inf, np.inf]}
                    for r in range(args.repeat):
                        tag = f"{name}-{n}-{int(record)}-{r}"
                        wall, cpu = plain(sc, probe, record, runs / f"plain-{tag}")
                        best["plain"] = [min(best["plain"][0], wall), min(best["plain"][1], cpu)]
                        wall, cpu, steps = through_env(sc, n, episode_s, record, runs / f"env-{tag}")
                        best["env"] = [min(best["env"][0], wall), min(best["env"][1], cpu)]
                    (env_wall, env_cpu), (plain_wall, plain_cpu) = best["env"], best["plain"]
                    print(f"{name:8} {n:>10} {'on' if record else 'off':>6} {steps / env_wall:>12.1f} "
                          f"{steps / plain_wall:>14.1f} {env_wall / plain_wall:>15.2f} {env_cpu / plain_cpu:>14.2f}",
                          flush=True)


if __name__ == "__main__":
    main()
