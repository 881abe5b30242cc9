"""Wholesale market clearing for the aggregator, and the settlement of a fleet's intervals.

Clearing (Couraud et al. 2022, phase 2): every export bid is accepted, or
with a limit price only where the market price reaches it. A price taker is
paid the market price; a price maker (``clearing = "price_maker"``) moves
it along a linear residual-demand curve, π − k E for an awarded export E
(:func:`clearing_price`), and plans for that (the aggregator's MILP counts
k E² off its revenue).

Settlement per market interval (energies in kWh, prices in currency/kWh):

- delivered export of the portfolio ``X_t`` = Σ over its meters (households
  after their battery, and the aggregator's own plants) of export − import;
- wholesale revenue on the committed volume: ``E_c,t · π_e,t``;
- imbalance: the paper's rule ``|X_t − E_c,t| · π_imb,t`` (a cost whatever
  the sign), or GB single-price settlement ``(E_c,t − X_t) · π_imb,t``
  (short pays, long is paid);
- household bills: import at the retail tariff, except the energy covered
  by the fleet's simultaneous export, billed at ``vpw_share`` (48 %) of it
  (the virtual private wire). The paper does not say how that energy is
  measured; dercosim does it per minute: the fleet's export that minute
  (other households' meters and the aggregator's plants) covers the
  importing households' imports pro rata, up to the smaller of the two
  totals. Exports are paid the household export price (none by default).

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard,
    "Real-Time Control of Distributed Batteries with Blockchain-Enabled Market Export
    Commitments," IEEE Transactions on Sustainable Energy, 2022 (phase 2, settlement, Table II).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def clear(bids_kwh: np.ndarray, price: np.ndarray, limit_price: float | None = None) -> np.ndarray:
    """Awarded export per interval: every bid (price taker), or only where ``price ≥ limit_price``."""
    bids = np.clip(np.asarray(bids_kwh, float), 0.0, None)
    if limit_price is None:
        return bids
    return np.where(np.asarray(price, float) >= limit_price, bids, 0.0)


def clearing_price(price: np.ndarray, awarded_kwh: np.ndarray, slope: float = 0.0) -> np.ndarray:
    """The price the fleet is paid for ``awarded_kwh``: π − k E on a linear residual-demand curve (k = 0: price taker).

    References: Solà Vilalta, Anjos and Cruise, "ADMM-based Unit and Time
    Decomposition for Price Arbitrage by Cooperative Price-Maker Electricity
    Storage Units," 2022 (a convex cost of the fleet's aggregate action).
    """
    return np.asarray(price, float) - float(slope) * np.clip(np.asarray(awarded_kwh, float), 0.0, None)


def vpw_covered_kwh(import_kwh: np.ndarray, fleet_export_kwh: np.ndarray) -> np.ndarray:
    """Per minute and importing household, the import covered by the fleet's simultaneous export.

    ``import_kwh`` (minutes, households) ≥ 0; ``fleet_export_kwh`` (minutes,)
    the export of the fleet's other meters and plants that minute. Each
    importer's share is pro rata to its import, up to the smaller total.
    """
    imp = np.clip(np.asarray(import_kwh, float), 0.0, None)
    total = imp.sum(axis=1)
    covered = np.minimum(total, np.clip(np.asarray(fleet_export_kwh, float), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, covered / total, 0.0)
    return imp * share[:, None]


@dataclass(frozen=True)
class Settlement:
    """Per interval (arrays of length ``n_intervals``) and per household (bills), currency and kWh."""

    delivered_kwh: np.ndarray
    committed_kwh: np.ndarray
    revenue: np.ndarray  #: wholesale revenue on the committed volume
    imbalance_kwh: np.ndarray  #: delivered − committed
    imbalance_cost: np.ndarray
    bills: np.ndarray  #: per household
    import_cost_retail: np.ndarray  #: per household, import billed at the full retail price
    import_cost_vpw: np.ndarray  #: per household, import covered by the fleet at vpw_share of the price
    export_revenue: np.ndarray  #: per household
    vpw_kwh: np.ndarray  #: per household, import covered by the fleet's export


def settle(meter_kw: np.ndarray, plant_kw: np.ndarray, committed_kwh: np.ndarray, wholesale_price: np.ndarray,
           imbalance_price: np.ndarray, import_price: np.ndarray, export_price: np.ndarray, step_h: float,
           steps_per_interval: int, vpw_share: float = 0.48, imbalance_rule: str = "absolute",
           imbalance_where: str = "committed") -> Settlement:
    """Settle a fleet. ``meter_kw`` (minutes, households): net power at each household meter (load convention,
    after the battery); ``plant_kw`` (minutes, plants): the aggregator's plants (load convention: generation
    is negative); ``committed_kwh``, the two market prices: per interval; ``import_price``/``export_price``:
    per minute (household tariff). ``imbalance_where``: imbalance is charged in the intervals with a commitment
    ("committed", as the authors' code of Couraud et al. 2022 settles) or in every interval ("every_interval")."""
    meter = np.asarray(meter_kw, float)
    plant = np.asarray(plant_kw, float).reshape(len(meter), -1)
    n_int = len(np.asarray(committed_kwh))
    if len(meter) != n_int * steps_per_interval:
        raise ValueError(f"{len(meter)} minutes are not {n_int} intervals of {steps_per_interval} steps")
    if imbalance_rule not in ("absolute", "gb_single_price"):
        raise ValueError(f"imbalance_rule must be 'absolute' or 'gb_single_price', got {imbalance_rule!r}")
    net_export_kw = -(meter.sum(axis=1) + plant.sum(axis=1))
    delivered = net_export_kw.reshape(n_int, steps_per_interval).sum(axis=1) * step_h
    committed = np.asarray(committed_kwh, float)
    revenue = committed * np.asarray(wholesale_price, float)
    diff = delivered - committed
    if imbalance_where not in ("committed", "every_interval"):
        raise ValueError(f"imbalance_where must be 'committed' or 'every_interval', got {imbalance_where!r}")
    if imbalance_rule == "absolute":
        imbalance_cost = np.abs(diff) * np.asarray(imbalance_price, float)
    else:
        imbalance_cost = -diff * np.asarray(imbalance_price, float)
    if imbalance_where == "committed":
        imbalance_cost = np.where(committed > 1e-9, imbalance_cost, 0.0)
    imp = np.clip(meter, 0.0, None) * step_h
    exp_hh = np.clip(-meter, 0.0, None) * step_h
    exp_plants = np.clip(-plant, 0.0, None).sum(axis=1) * step_h
    covered = vpw_covered_kwh(imp, exp_hh.sum(axis=1) + exp_plants)
    price = np.asarray(import_price, float)[:, None]
    retail = ((imp - covered) * price).sum(axis=0)
    vpw = (covered * price * vpw_share).sum(axis=0)
    export_rev = (exp_hh * np.asarray(export_price, float)[:, None]).sum(axis=0)
    return Settlement(delivered, committed, revenue, diff, imbalance_cost, retail + vpw - export_rev, retail, vpw,
                      export_rev, covered.sum(axis=0))
