"""Generic ADMM over a simulated network (Jiang & Wang 2024): agents with local subproblems, one coupling problem."""

from dercosim.planning.admm.engine import ADMMResult, ADMMSettings, run_admm
from dercosim.markets.network import Latency, Network

__all__ = ["ADMMResult", "ADMMSettings", "Latency", "Network", "run_admm"]
