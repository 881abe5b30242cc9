"""Community-battery value stacking on a feeder (Jiang & Wang 2024), as ADMM agents and a grid operator.

Each community i (hourly, H steps of Δt h) has a battery (1)–(4), an HVAC
thermal model (5)–(7), grid import, PV local use and feed-in, a local-market
buy (8)–(11), and a discharge split into battery-to-building,
battery-to-grid and local-market sale (18)–(22). Its cost (24):

    C_i = Σ_t π_g,t p_grid,t Δt  [+ π_peak · max_t p_grid,t  (two-part tariff)]
        + α_b Σ_t ((p_c Δt)² + (p_d Δt)²)                    (degradation)
        + Σ_t π_ET,t (p_ETB − p_ETS) Δt − Σ_t π_B2G,t p_B2G Δt − Σ_t π_feed,t p_feed Δt
        [+ β Σ_t (T_in,t − T_pref)²  (discomfort, off by default)]

with terminal energy ≥ initial energy. The community exchanges
``x_i = [p_grid, p_ETB, p_ETS, p_B2G, p_feed]`` (five blocks of H, kW) with
the grid operator, whose coupling problem keeps the copies ``z_i`` within the
LinDistFlow limits of the feeder (Baran & Wu 1989: squared-voltage branch form with the
base loads at every bus, voltage and optional flow limits) and the
local-market balance (23) Σ_i (p_ETS − p_ETB) = 0.

Binaries (dercosim resolves the paper's binaries this way): charge/discharge (x) and buy/sell (y) are relaxed;
a small penalty on local-market buy and sell discourages doing both. After
ADMM, :func:`complementarity_violations` finds hours where both directions
are used and :meth:`CommunityQP.fix` forbids the weaker direction, and the
problem is re-solved (convex again). ``binaries="mixed_integer"`` instead
rounds inside every subproblem solve (relaxed solve, forbid the weaker
direction, re-solve, until none is left), then keeps the directions the last
iterate chose and re-runs ADMM on that convex problem (round, then polish):
a heuristic with no convergence guarantee for the rounded phase, which
usually stops at ``max_iter``. :meth:`CentralQP.solve_mixed_integer` gives
the integer optimum (MILP) to compare with.

Everything here is plain numpy/scipy/casadi; :mod:`dercosim.planning.admm.engine`
runs the iterations.

References
----------
- Jiang & Wang 2024: C. Jiang and H. Wang, "Network-Aware Value Stacking of Community Battery via Asynchronous
    Distributed Optimization," 2024. (eqs. (1)–(24), Figs. 3–4)
- Baran & Wu 1989: M. E. Baran and F. F. Wu, "Network reconfiguration in distribution systems for loss reduction
    and load balancing," IEEE Transactions on Power Delivery 4(2), 1989. (LinDistFlow)
"""

from dercosim.planning.valuestack.central import CentralQP, Solution
from dercosim.planning.valuestack.community import CommunityQP
from dercosim.planning.valuestack.model import (EXCHANGED, LOCAL, Community, Fixings, Market, Streams,
                                                   community_cost, complementarity_fixings,
                                                   complementarity_violations, unpack, with_streams)
from dercosim.planning.valuestack.operator import (Feeder, GridOperatorQP, InfeasibleGrid,
                                                      describe_base_violations, network_rows, plan_voltages_pu)
from dercosim.planning.valuestack.plan import PlanResult, solve_value_stacking

__all__ = ["EXCHANGED", "LOCAL", "CentralQP", "Community", "CommunityQP", "Feeder", "Fixings", "GridOperatorQP",
           "InfeasibleGrid", "Market", "PlanResult", "Solution", "Streams", "community_cost",
           "complementarity_fixings", "complementarity_violations", "describe_base_violations", "network_rows",
           "plan_voltages_pu", "solve_value_stacking", "unpack", "with_streams"]
