"""Train PPO (stable-baselines3) on the co-simulation: four households' batteries, one day per episode.

Not a test dependency: ``pip install stable-baselines3`` (it brings PyTorch) first.

    python examples/gym_sb3.py --steps 20000

The environment is a plain gymnasium.Env, so anything that takes one works: here SB3's PPO on
``dercosim/Dercosim-v0`` through ``gymnasium.make`` (the observation is a (households, features) array, which
SB3's MlpPolicy flattens). Each episode is a day drawn from a week of June 2016 by the environment's seed.
"""

from __future__ import annotations

import argparse

import gymnasium
import numpy as np

import dercosim as dc
import dercosim.gym  # noqa: F401 - registers dercosim/Dercosim-v0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps to train for")
    args = parser.parse_args()
    from stable_baselines3 import PPO  # not a dercosim dependency

    scenario = dc.load("households_pv_battery")
    scenario.set("clock.duration", "7d")  # the pool of episodes: seven days from 21 June
    env = gymnasium.make("dercosim/Dercosim-v0", scenario=scenario, households=4, episode="1d", period_s=300)
    model = PPO("MlpPolicy", env, n_steps=288, batch_size=96, seed=0, verbose=1)
    model.learn(total_timesteps=args.steps)
    obs, _ = env.reset(seed=123)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, _, done, _ = env.step(action)
        total += reward
    idle_env = env.unwrapped
    obs, _ = idle_env.reset(seed=123)
    idle, done = 0.0, False
    while not done:
        obs, reward, _, done, _ = idle_env.step(np.zeros(idle_env.action_space.shape, dtype=np.float32))
        idle += reward
    print(f"one day: PPO reward {total:.3f} against {idle:.3f} with idle batteries")
    env.close()


if __name__ == "__main__":
    main()
