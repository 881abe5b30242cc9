"""Learning controllers: the co-simulation as a gymnasium environment (:class:`DercosimEnv`) and a PettingZoo
parallel environment (:func:`parallel_env`), with AC power flow, the PMS inside the minute, and the market and
smart contract where the scenario has them. Needs the ``gym`` extra (``pip install 'dercosim[gym]'``).
"""

from dercosim.environment import require_extra

require_extra("gym")

from dercosim.gym.env import (ACTIONS, DEFAULT_OBSERVATIONS, ENV_OBSERVATIONS, DercosimEnv,  # noqa: E402
                              StepRecord, default_reward)
from dercosim.gym.parallel import DercosimParallelEnv, parallel_env  # noqa: E402

import gymnasium  # noqa: E402

if "dercosim/Dercosim-v0" not in gymnasium.registry:  # gymnasium.make("dercosim/Dercosim-v0", scenario=...)
    gymnasium.register(id="dercosim/Dercosim-v0", entry_point="dercosim.gym.env:DercosimEnv")

__all__ = ["ACTIONS", "DEFAULT_OBSERVATIONS", "ENV_OBSERVATIONS", "DercosimEnv", "DercosimParallelEnv", "StepRecord",
           "default_reward", "parallel_env"]
