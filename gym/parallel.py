"""A PettingZoo parallel environment: one agent per controlled household, over :class:`DercosimEnv`.

Each agent observes its own row of the single-agent observation and sets its own row of the action; its reward
is its own household's (:func:`~dercosim.gym.env.default_reward` or the given function's value for it).

References
----------
Terry, J. K. et al. (2021). PettingZoo: Gym for Multi-Agent Reinforcement Learning. NeurIPS 34.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from dercosim.gym.env import DercosimEnv


class DercosimParallelEnv(ParallelEnv):
    """The co-simulation with one agent per controlled household (arguments as :class:`DercosimEnv`)."""

    metadata = {"render_modes": [], "name": "dercosim_parallel_v0"}

    def __init__(self, scenario: Any, **kwargs: Any) -> None:
        self.env = DercosimEnv(scenario, **kwargs)
        self.possible_agents = list(self.env.households)
        self.agents: list[str] = []
        self._row = {a: i for i, a in enumerate(self.possible_agents)}
        k = len(self.env.action_names)
        box = self.env.observation_box
        self._obs_space = spaces.Box(box.low[0], box.high[0], dtype=np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, shape=(k,), dtype=np.float32)

    @functools.lru_cache(maxsize=None)  # noqa: B019 - one space object per agent, as PettingZoo asks
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def action_space(self, agent: str) -> spaces.Box:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        return ({a: obs[i] for a, i in self._row.items()},
                {a: {"t_s": info["t_s"], "episode": info["episode"]} for a in self.agents})

    def step(self, actions: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agents {missing}")
        joint = np.zeros(self.env.action_box.shape, dtype=np.float32)
        for a, i in self._row.items():
            if a in actions:
                joint[i] = np.asarray(actions[a], dtype=np.float32).reshape(-1)
        obs, _, terminated, truncated, info = self.env.step(joint)
        rewards = info["rewards"]
        agents = self.agents
        out = ({a: obs[self._row[a]] for a in agents}, {a: float(rewards[self._row[a]]) for a in agents},
               {a: terminated for a in agents}, {a: truncated for a in agents},
               {a: {"t_s": info["t_s"], "episode": info["episode"]} for a in agents})
        if terminated or truncated:
            self.agents = []
        return out

    def close(self) -> None:
        self.env.close()


def parallel_env(scenario: Any, **kwargs: Any) -> DercosimParallelEnv:
    """A PettingZoo ``ParallelEnv`` with one agent per controlled household (arguments as :class:`DercosimEnv`)."""
    return DercosimParallelEnv(scenario, **kwargs)
