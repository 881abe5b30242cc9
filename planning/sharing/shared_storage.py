"""Parties sharing one storage station that sizes itself, as blocks for ADMM (prosumers or microgrids).

Parties (prosumers with PV, or microgrids with wind, PV and a gas turbine)
trade with the grid and send ``e_n,h`` (kW, positive = to the station) to a
shared energy-storage station (SES) that chooses its energy rating E (kWh)
and power rating P (kW) and its operation. Per hour h (Δ = ``dt_h``):

party n (a lower-tier block)::

    buy + gt − sell − e = load − pv − wind              (power balance)
    buy_h ≤ peak                                        (demand charge base)
    cost = Σ (π_buy buy − π_feed sell + b gt + a gt²) Δ + Q · peak

station (the upper tier: sizing and operation)::

    ch − dis − buy_s + sell_s = Σ_n q_n                  (q_n: received from n)
    s_h = (1 − σ) s_{h−1} + (η_c ch − dis / η_d) Δ,  s_0 = s_H   (cyclic)
    s_min E ≤ s_h ≤ E,  ch, dis ≤ P,  E = γ P (if γ is given)
    cost = c_E E + c_P P + Σ (c_om (ch + dis) + π_buy buy_s − π_s sell_s) Δ + Q · peak_s

coupling: e_n,h = q_n,h. The payments between parties and station cancel in
the total (Zhao et al. 2024, eq. (9)), so the cooperative problem minimises
the sum of the costs above and any settlement prices (Feng et al. 2025's SES
sale and purchase prices) only split that total afterwards
(:func:`settlement`). The complementarity of charge and discharge and of
buy and sell is relaxed: with losses, O&M and a feed-in below the import
price, doing both at once never pays, so the relaxation is tight (checked on
the solution by :attr:`SharingOutcome.simultaneous_kw`).

References
----------
- Zhao et al. 2024: L. Zhao, J. Zhang, Q. Lv, Z. Zhang, P. Gao and R. Zhang, "AADMM based shared energy storage
    planning for resilience improvement of renewable energy stations," Frontiers in Energy Research
    12:1467627, 2024. (eqs. (1)–(11): SES sizing and prosumer sharing under a two-part tariff)
- Feng et al. 2025: J. Feng, X. Zhang, S. Wang and W. Zhao, "ADMM-Based Two-Tier Distributed Collaborative
    Allocation Planning for Shared Energy Storage Capacity in Microgrid Cluster," Electronics 14(16):3234,
    2025. (upper tier sizes the SES, lower tier schedules each microgrid; SES price periods)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from dercosim.planning.admm import ADMMResult, ADMMSettings, run_admm
from dercosim.planning.sharing.blocks import Block, BlockAgent, BlockCoupling, solve_central


@dataclass(frozen=True)
class Party:
    """A prosumer or microgrid: hourly series in kW (shape (H,)), a gas turbine if ``gt_max_kw`` > 0."""

    name: str
    load_kw: np.ndarray
    pv_kw: np.ndarray
    wind_kw: np.ndarray | None = None
    gt_max_kw: float = 0.0
    gt_cost_per_kwh: float = 0.0  #: b, CNY/kWh
    gt_cost_quad: float = 0.0  #: a, CNY/(kW²·h)
    exchange_max_kw: float = 1e6  #: limit of |e| on the link to the station


@dataclass(frozen=True)
class GridTariff:
    """Two-part tariff per hour of the horizon: energy prices (CNY/kWh) and a demand charge (CNY/kW of peak)."""

    buy_per_kwh: np.ndarray
    feed_in_per_kwh: np.ndarray
    demand_charge_per_kw: float = 0.0  #: for the horizon (a monthly charge scaled to it)


@dataclass(frozen=True)
class StationSpec:
    """The shared station's costs and limits. Costs are for the horizon (e.g. a day's share of the investment)."""

    cost_per_kwh: float  #: c_E, CNY per kWh of rating
    cost_per_kw: float  #: c_P, CNY per kW of rating
    om_per_kwh: float  #: c_om, CNY per kWh charged or discharged
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    self_discharge_per_h: float = 0.0  #: σ, fraction of the stored energy lost per hour
    soc_min: float = 0.2  #: lower SoC bound, fraction of E
    e_to_p_h: float | None = None  #: γ in E = γ P (hours); None: E and P sized independently
    e_max_kwh: float = 1e6
    can_buy: bool = True  #: may buy from the grid at the tariff (and pays its demand charge)
    sell_per_kwh: np.ndarray | None = None  #: None: may not sell to the grid

    def __post_init__(self) -> None:
        if not (0 < self.eta_charge <= 1 and 0 < self.eta_discharge <= 1):
            raise ValueError(f"efficiencies must be in (0, 1], got {self.eta_charge}, {self.eta_discharge}")
        if not 0 <= self.soc_min < 1:
            raise ValueError(f"soc_min must be in [0, 1), got {self.soc_min}")


class _LP:
    """Assemble a block variable by variable and row by row."""

    def __init__(self) -> None:
        self.n = 0
        self.index: dict[str, slice] = {}
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.h: list[np.ndarray] = []
        self.rows: list[tuple[dict[int, float], float, float]] = []

    def var(self, name: str, size: int, lb: float | np.ndarray, ub: float | np.ndarray,
            c: float | np.ndarray = 0.0, h: float | np.ndarray = 0.0) -> np.ndarray:
        self.index[name] = slice(self.n, self.n + size)
        self.n += size
        for store, v in ((self.lb, lb), (self.ub, ub), (self.c, c), (self.h, h)):
            store.append(np.broadcast_to(np.asarray(v, float), (size,)).copy())
        return np.arange(self.index[name].start, self.index[name].stop)

    def row(self, coef: dict[int, float], lo: float, hi: float) -> None:
        self.rows.append((coef, lo, hi))

    def block(self, name: str, exchanged: np.ndarray | None = None) -> Block:
        entries = [(r, j, v) for r, (coef, _, _) in enumerate(self.rows) for j, v in coef.items()]
        r, j, v = zip(*entries) if entries else ((), (), ())
        a = sp.coo_matrix((v, (r, j)), shape=(len(self.rows), self.n)).tocsr()  # repeated entries add up
        h = np.concatenate(self.h)
        return Block(name=name, c=np.concatenate(self.c), a=a,
                     lba=np.array([lo for _, lo, _ in self.rows]), uba=np.array([hi for _, _, hi in self.rows]),
                     lbx=np.concatenate(self.lb), ubx=np.concatenate(self.ub), h=h if np.any(h) else None,
                     exchanged=np.zeros(0, int) if exchanged is None else exchanged, index=dict(self.index))


def party_block(p: Party, tariff: GridTariff, dt_h: float = 1.0) -> Block:
    """Party ``p``'s block; its exchanged variables are ``e`` (kW to the station, per hour)."""
    n_h = len(p.load_kw)
    wind = np.zeros(n_h) if p.wind_kw is None else np.asarray(p.wind_kw, float)
    residual = np.asarray(p.load_kw, float) - np.asarray(p.pv_kw, float) - wind
    m = _LP()
    buy = m.var("buy", n_h, 0.0, np.inf, tariff.buy_per_kwh * dt_h)
    sell = m.var("sell", n_h, 0.0, np.inf, -np.asarray(tariff.feed_in_per_kwh, float) * dt_h)
    gt = m.var("gt", n_h, 0.0, p.gt_max_kw, p.gt_cost_per_kwh * dt_h, 2.0 * p.gt_cost_quad * dt_h)
    e = m.var("e", n_h, -p.exchange_max_kw, p.exchange_max_kw)
    peak = m.var("peak", 1, 0.0, np.inf, tariff.demand_charge_per_kw)
    for t in range(n_h):
        m.row({buy[t]: 1.0, gt[t]: 1.0, sell[t]: -1.0, e[t]: -1.0}, residual[t], residual[t])
        m.row({buy[t]: 1.0, peak[0]: -1.0}, -np.inf, 0.0)
    return m.block(p.name, exchanged=e)


def station_block(spec: StationSpec, tariff: GridTariff, n_parties: int, n_h: int,
                  dt_h: float = 1.0) -> tuple[Block, list[np.ndarray]]:
    """The station's block and, per party, the indices of its ``q_n`` (what it receives from n)."""
    m = _LP()
    q = [m.var(f"q{n}", n_h, -np.inf, np.inf) for n in range(n_parties)]
    ch = m.var("ch", n_h, 0.0, np.inf, spec.om_per_kwh * dt_h)
    dis = m.var("dis", n_h, 0.0, np.inf, spec.om_per_kwh * dt_h)
    buy = m.var("buy", n_h, 0.0, np.inf if spec.can_buy else 0.0, tariff.buy_per_kwh * dt_h)
    sell_price = np.zeros(n_h) if spec.sell_per_kwh is None else np.asarray(spec.sell_per_kwh, float)
    sell = m.var("sell", n_h, 0.0, 0.0 if spec.sell_per_kwh is None else np.inf, -sell_price * dt_h)
    soc = m.var("soc", n_h, 0.0, np.inf)
    e_kwh = m.var("E", 1, 0.0, spec.e_max_kwh, spec.cost_per_kwh)
    p_kw = m.var("P", 1, 0.0, np.inf, spec.cost_per_kw)
    peak = m.var("peak", 1, 0.0, np.inf, tariff.demand_charge_per_kw)
    keep = 1.0 - spec.self_discharge_per_h * dt_h
    for t in range(n_h):
        m.row({ch[t]: 1.0, dis[t]: -1.0, buy[t]: -1.0, sell[t]: 1.0, **{q[n][t]: -1.0 for n in range(n_parties)}},
              0.0, 0.0)
        prev = soc[t - 1] if t > 0 else soc[n_h - 1]  # cyclic: s_0 = s_H
        m.row({soc[t]: 1.0, prev: -keep, ch[t]: -spec.eta_charge * dt_h, dis[t]: dt_h / spec.eta_discharge}, 0.0, 0.0)
        m.row({soc[t]: 1.0, e_kwh[0]: -1.0}, -np.inf, 0.0)
        m.row({soc[t]: 1.0, e_kwh[0]: -spec.soc_min}, 0.0, np.inf)
        m.row({ch[t]: 1.0, p_kw[0]: -1.0}, -np.inf, 0.0)
        m.row({dis[t]: 1.0, p_kw[0]: -1.0}, -np.inf, 0.0)
        m.row({buy[t]: 1.0, peak[0]: -1.0}, -np.inf, 0.0)
    if spec.e_to_p_h is not None:
        m.row({e_kwh[0]: 1.0, p_kw[0]: -spec.e_to_p_h}, 0.0, 0.0)
    return m.block("station"), q


@dataclass(frozen=True)
class SharingProblem:
    """Parties, the tariff they face, the station; ``dt_h`` hours per step."""

    parties: tuple[Party, ...]
    tariff: GridTariff
    station: StationSpec
    dt_h: float = 1.0
    #: settlement prices between parties and station (CNY/kWh per hour): station sells, station buys
    ses_sale_per_kwh: np.ndarray | None = None
    ses_purchase_per_kwh: np.ndarray | None = None

    @property
    def n_h(self) -> int:
        return len(self.parties[0].load_kw)

    def blocks(self) -> tuple[list[Block], Block, list[np.ndarray]]:
        agents = [party_block(p, self.tariff, self.dt_h) for p in self.parties]
        station, q = station_block(self.station, self.tariff, len(self.parties), self.n_h, self.dt_h)
        return agents, station, q


@dataclass
class SharingOutcome:
    """One solution: per-party and station figures (CNY, kWh, kW)."""

    party_cost: np.ndarray  #: each party's own cost (grid, gas turbine, demand charge), CNY
    party_settlement: np.ndarray  #: what each party pays the station at the settlement prices, CNY (0 if none)
    station_cost: float  #: the station's own cost (investment share, O&M, grid), CNY
    e_kwh: float
    p_kw: float
    self_sufficiency: float  #: 1 − grid imports (parties and station) / load
    exchange_kw: np.ndarray  #: (parties, H), positive = to the station
    simultaneous_kw: float  #: largest min(charge, discharge) or min(buy, sell): 0 if the relaxation is tight
    admm: ADMMResult | None = field(default=None, repr=False)

    @property
    def total_cost(self) -> float:
        return float(self.party_cost.sum() + self.station_cost)


def settlement(problem: SharingProblem, exchange_kw: np.ndarray) -> np.ndarray:
    """What each party pays the station (CNY): energy received at the SES sale price, sent at its purchase price."""
    if problem.ses_sale_per_kwh is None or problem.ses_purchase_per_kwh is None:
        return np.zeros(len(exchange_kw))
    sent = np.clip(exchange_kw, 0.0, None)
    received = np.clip(-exchange_kw, 0.0, None)
    return (received @ problem.ses_sale_per_kwh - sent @ problem.ses_purchase_per_kwh) * problem.dt_h


def _outcome(problem: SharingProblem, agents: list[Block], station: Block | None, u: list[np.ndarray],
             u_station: np.ndarray | None, admm: ADMMResult | None = None) -> SharingOutcome:
    load = sum(float(np.sum(p.load_kw)) for p in problem.parties) * problem.dt_h
    imports = sum(float(np.sum(b.part(x, "buy"))) for b, x in zip(agents, u)) * problem.dt_h
    exchange = np.array([b.part(x, "e") for b, x in zip(agents, u)])
    simult = max(float(np.max(np.minimum(b.part(x, "buy"), b.part(x, "sell")))) for b, x in zip(agents, u))
    e_kwh = p_kw = station_cost = 0.0
    if station is not None and u_station is not None:
        imports += float(np.sum(station.part(u_station, "buy"))) * problem.dt_h
        e_kwh, p_kw = float(station.part(u_station, "E")[0]), float(station.part(u_station, "P")[0])
        station_cost = station.cost(u_station)
        simult = max(simult, float(np.max(np.minimum(station.part(u_station, "ch"), station.part(u_station, "dis")))))
    return SharingOutcome(party_cost=np.array([b.cost(x) for b, x in zip(agents, u)]),
                          party_settlement=settlement(problem, exchange), station_cost=station_cost,
                          e_kwh=e_kwh, p_kw=p_kw, self_sufficiency=1.0 - imports / load if load > 0 else 0.0,
                          exchange_kw=exchange, simultaneous_kw=simult, admm=admm)


def solve_alone(problem: SharingProblem) -> SharingOutcome:
    """No sharing: every party on its own (e = 0), no station."""
    agents, _, _ = problem.blocks()
    return _outcome(problem, agents, None, [b.solve(fix_exchanged=0.0) for b in agents], None)


def solve_centralised(problem: SharingProblem) -> SharingOutcome:
    """The cooperative optimum, all blocks in one QP on HiGHS."""
    agents, station, q = problem.blocks()
    sol = solve_central(agents, station, q)
    return _outcome(problem, agents, station, sol.u[:-1], sol.u[-1])


def solve_distributed(problem: SharingProblem, settings: ADMMSettings = ADMMSettings()) -> SharingOutcome:
    """The cooperative problem by ADMM: each party solves its block, the station its own (z-update).

    Costs are each block's at its own latest solution; the history's ``cost``
    column is their sum per iteration.
    """
    agents, station, q = problem.blocks()
    party_agents = [BlockAgent(b) for b in agents]
    coupling = BlockCoupling(station, q)
    res = run_admm(party_agents, coupling, settings,
                   objective=lambda: sum(a.cost() for a in party_agents) + coupling.cost())
    return _outcome(problem, agents, station, [a.u for a in party_agents], coupling.u, admm=res)
