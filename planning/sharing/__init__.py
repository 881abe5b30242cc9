"""Shared storage (Zhao et al. 2024; Feng et al. 2025) and cooperative price-maker storage (Solà Vilalta et al.)
as convex blocks on the generic ADMM engine."""

from dercosim.planning.sharing.blocks import Block, BlockAgent, BlockCoupling, InfeasibleBlock, solve_central
from dercosim.planning.sharing.shared_storage import (GridTariff, Party, SharingOutcome, SharingProblem,
                                                         StationSpec, solve_alone, solve_centralised,
                                                         solve_distributed)

__all__ = ["Block", "BlockAgent", "BlockCoupling", "GridTariff", "InfeasibleBlock", "Party", "SharingOutcome",
           "SharingProblem", "StationSpec", "solve_alone", "solve_central", "solve_centralised",
           "solve_distributed"]
