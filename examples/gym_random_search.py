"""Train a linear battery policy on the co-simulation by the cross-entropy method, without deep learning.

Four households of ``households_pv_battery`` (IEEE-33, AC power flow every minute, 1-s PMS) are driven by a
policy ``a = clip(w · [(load − PV)/5 kW, SoC, 1])`` per household (a = +1: charge at the limit, −1: discharge);
the other 28 batteries keep the scenario's rule-based controller. Each candidate ``w`` is scored on the same
episode (episodes are deterministic), the best quarter refits the sampling distribution, and the result is held
against idle batteries on the bill.

    python examples/gym_random_search.py            # 4 iterations of 8 candidates, an episode 12:00-24:00
    python examples/gym_random_search.py --quick    # 2 iterations of 3 on 16:00-22:00 (what the test runs)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import dercosim as dc
from dercosim.gym import DercosimEnv


def make_env(start: str = "12:00", hours: int = 12) -> DercosimEnv:
    """Four households of ``households_pv_battery``, one episode of ``hours`` from ``start`` on 21 June 2016."""
    scenario = dc.load("households_pv_battery")
    scenario.set("clock.start", f"2016-06-21T{start}")
    scenario.set("clock.duration", f"{hours}h")
    return DercosimEnv(scenario, households=4, episode=f"{hours}h", observations=("load_kw", "pv_kw", "soc_frac"),
                       actions=("p_set_kw",))


def features(obs: np.ndarray) -> np.ndarray:
    """(households, 3): net demand in units of 5 kW, state of charge, a constant."""
    return np.stack([(obs[:, 0] - obs[:, 1]) / 5.0, obs[:, 2], np.ones(len(obs))], axis=1)


def episode_bill(env: DercosimEnv, w: np.ndarray | None) -> float:
    """The controlled households' bill over one episode (the default reward's bill part), currency;
    ``w`` None: idle batteries."""
    obs, _ = env.reset(options={"episode": 0})
    bill, done = 0.0, False
    while not done:
        action = np.zeros(env.action_space.shape) if w is None else np.clip(features(obs) @ w, -1, 1)[:, None]
        obs, _, _, done, _ = env.step(action)
        assert env.last_record is not None
        bill += float(env.last_record.bill().sum())
    return bill


def train(env: DercosimEnv, iterations: int, candidates: int, seed: int = 0) -> tuple[np.ndarray, float, float]:
    """Cross-entropy search over w; returns (w, the learned policy's bill, idle batteries' bill)."""
    rng = np.random.default_rng(seed)
    mean, std = np.zeros(3), np.ones(3)
    idle = episode_bill(env, None)
    best_w, best = np.zeros(3), idle
    for it in range(iterations):
        ws = rng.normal(mean, std, size=(candidates, 3))
        bills = np.array([episode_bill(env, w) for w in ws])
        elite = ws[np.argsort(bills)[:max(2, candidates // 4)]]
        mean, std = elite.mean(axis=0), elite.std(axis=0) + 0.05
        if bills.min() < best:
            best, best_w = float(bills.min()), ws[int(np.argmin(bills))]
        print(f"iteration {it + 1}: best bill {bills.min():.3f}, mean {bills.mean():.3f} (idle {idle:.3f})")
    env.close()
    return best_w, best, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 iterations of 3 candidates on 16:00-22:00")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    env = make_env("16:00", 6) if args.quick else make_env()
    w, bill, idle = train(env, *((2, 3) if args.quick else (4, 8)), seed=args.seed)
    print(f"learned w = {np.round(w, 3).tolist()}: bill {bill:.3f} against {idle:.3f} with idle batteries "
          f"({idle - bill:.3f} better; negative bills are net earnings), {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
