"""The smart contract that coordinates a battery fleet inside each market interval (Couraud et al. 2022, III-B).

Plain Python, no mosaik and no floats hidden in a chain: the same state and
rules can be put on an EVM. Per market interval the contract holds the
aggregator's series — the virtual SoC target ``SoC^{t,A}``, the commitment
``E_c^t`` and the mode ``S^t`` — and, per registered household, its latest
report: the SoC now, the net export since its last report and the net
export since the interval started. Every round it computes

    RE^{t,A} = E_c^t − Σ_k E_e^{t,k} − Σ_meters E_e^{tsc,m} · (rounds left)   (12), anticipated
    w_e^k = W_e^k / Σ W_e,   W_e^k = SoC_k if (E_e^{tsc,k} ≥ 0 OR SoC_k ≥ SoC^{t,A}) else 0   (10)–(11)
    w_i^k = W_i^k / Σ W_i,   W_i^k = 1 − SoC_k

and sends ``RE^{t,A}``, ``w_e^k`` and ``w_i^k`` to every household, whose
HEMS then aims at ``RE^{t,k} = RE^{t,A} · w^k − (its net export since that
message)`` (w_e when RE^{t,A} ≥ 0, else w_i; eq. (7)).

Three readings, as the authors' MATLAB code and contract (their public
repository ``bcouraud/RT_Battery_Control``) resolve the paper's text:

- **No commitment, no target.** In an interval with nothing committed
  (E_c^t = 0) the reply carries no RE (``Reply.committed`` is False and
  RE^{t,k} = 0: ε = 0 for every home, which then serves itself). Otherwise
  RE^{t,A} = −(the plants' exports) < 0 there, and every home would import
  to cancel the plants.
- **Eq. (11) reads OR** (``w_export_rule = "or"``): a battery at or above the
  target, or one that exported since its last report, shares the export.
  ``"and"`` keeps the literal AND, which shut low homes out of large evening
  commitments.
- **Meters without a battery are anticipated** (``anticipate_meters``): a plant
  or a home without a battery will go on exporting, so RE^{t,A} subtracts
  each meter's last report (its export over the last round) times the rounds
  left in the interval (``compute(rounds_left)``); without it the batteries
  are asked for the whole remainder and over-deliver.

Edge cases the paper leaves open, as dercosim resolves them:

- **Σ W = 0** (no household qualifies: every battery is below the target or
  importing, or, for w_i, every battery is full): the share is split
  equally among the households that have reported, so the remaining
  commitment is still spread over the fleet rather than dropped; each HEMS's
  MPC then does what its battery's limits allow.
- **A household that never reported** in the interval has an unknown SoC:
  it gets weight 0 (``w_e = w_i = 0``) and contributes 0 to Σ E_e until it
  reports. If nobody has reported, nobody gets a share.
- **Meters without a battery** (the aggregator's plants, portfolio
  households without one) report their exports too, so RE^{t,A} is the
  remaining commitment of the whole portfolio — what the market settles —
  but they get no weights and no reply. Without them a plant that exports
  more or less than forecast would leave a gap no battery is asked to close.
- **Negative exports** (imports) count as they are: they raise ``RE^{t,A}``
  and, under the AND rule, make ``W_e`` of that household 0.
- **Interval reset**: :meth:`SmartContract.start_interval` zeroes the
  exports since the interval start and forgets the reports, so a report of
  the previous interval never counts in the next.

Units: SoC as a fraction 0..1, energies in kWh (net export, + = export).

References
----------
- Couraud et al. 2022: B. Couraud, V. Robu, D. Flynn, M. Andoni, S. Norbu and H. Quinard,
    "Real-Time Control of Distributed Batteries with Blockchain-Enabled Market Export
    Commitments," IEEE Transactions on Sustainable Energy, 2022 (eqs. (7), (10)–(12), section III-B).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


#: energies are compared to within half the EVM engine's unit (1 mWh = 1e-6 kWh; it rounds to the nearest)
ENERGY_TOL_KWH = 0.5e-6
#: SoC is compared to within half the EVM engine's unit (1 ppm)
SOC_TOL_FRAC = 0.5e-6


class ContractError(ValueError):
    """A call the contract refuses (an unregistered household, a value out of range): the caller counts it."""


@dataclass(frozen=True)
class Reply:
    """What the contract sends a household after a round."""

    re_fleet_kwh: float  #: RE^{t,A}, the fleet's remaining net export in the interval (kWh; < 0: import)
    w_export: float  #: w_e^k
    w_import: float  #: w_i^k
    soc_target_frac: float  #: SoC^{t,A} of the interval
    mode_s: float  #: S^t of the interval
    interval: int
    committed: bool = True  #: the interval has a commitment; without one there is no RE (module doc)

    def re_household_kwh(self, exported_since_kwh: float) -> float:
        """RE^{t,k} = RE^{t,A} · w − net export since this reply (eq. (7)); 0 in an interval with no commitment."""
        if not self.committed:
            return 0.0
        w = self.w_export if self.re_fleet_kwh >= 0 else self.w_import
        return self.re_fleet_kwh * w - exported_since_kwh


@dataclass
class _Household:
    storage: bool = True  #: False: a meter of the portfolio without a battery (a plant, a household without one)
    soc_frac: float = math.nan
    export_since_last_kwh: float = 0.0
    export_in_interval_kwh: float = 0.0
    reported: bool = False


W_EXPORT_RULES = ("or", "and")


class SmartContract:
    """State and rules of the coordination contract (see the module doc). ``w_export_rule``: eq. (11) read as
    "or" (default) or "and"; ``anticipate_meters``: RE^{t,A} subtracts the meters' expected remaining export;
    ``target_without_commitment``: send RE in intervals with nothing committed too (the old reading)."""

    def __init__(self, w_export_rule: str = "or", anticipate_meters: bool = True,
                 target_without_commitment: bool = False) -> None:
        if w_export_rule not in W_EXPORT_RULES:
            raise ValueError(f"w_export_rule must be one of {W_EXPORT_RULES}, got {w_export_rule!r}")
        self.w_export_rule, self.anticipate_meters = w_export_rule, bool(anticipate_meters)
        self.target_without_commitment = bool(target_without_commitment)
        self.households: dict[str, _Household] = {}
        self.soc_target_frac: list[float] = []
        self.committed_kwh: list[float] = []
        self.mode_s: list[float] = []
        self.interval = -1
        self.rounds = 0

    def register(self, household: str, storage: bool = True) -> None:
        """A member of the portfolio: with ``storage`` a battery household that gets weights and RE, without it a
        meter whose exports count in RE^{t,A} only (a plant of the aggregator, a household without a battery)."""
        if household in self.households:
            raise ContractError(f"household {household!r} is already registered")
        self.households[household] = _Household(storage=bool(storage))

    def set_series(self, soc_target_frac: Sequence[float], committed_kwh: Sequence[float],
                   mode_s: Sequence[float], first_interval: int = 0) -> None:
        """The aggregator's series from ``first_interval`` on (per market interval)."""
        n = len(committed_kwh)
        if not (len(soc_target_frac) == len(mode_s) == n):
            raise ContractError("soc_target_frac, committed_kwh and mode_s need one value per interval")
        for name, values in (("committed_kwh", committed_kwh), ("mode_s", mode_s)):
            if any(not math.isfinite(v) for v in values):
                raise ContractError(f"{name}: every value must be finite")
        end = first_interval + n
        for series in (self.soc_target_frac, self.committed_kwh, self.mode_s):
            series.extend([math.nan] * max(0, end - len(series)))
        self.soc_target_frac[first_interval:end] = [float(v) for v in soc_target_frac]
        self.committed_kwh[first_interval:end] = [float(v) for v in committed_kwh]
        self.mode_s[first_interval:end] = [float(v) for v in mode_s]

    def start_interval(self, interval: int) -> None:
        """A new market interval: exports since the interval start go back to 0, reports are forgotten."""
        self.interval = int(interval)
        for h in self.households.values():
            h.export_in_interval_kwh = 0.0
            h.export_since_last_kwh = 0.0
            h.reported = False

    def update(self, household: str, soc_frac: float, export_since_last_kwh: float,
               export_in_interval_kwh: float | None = None) -> None:
        """A household's report: its SoC now, its net export since its last report and (optionally, as the
        paper's HEMS sends it) since the interval started (+ = export). With the latter, a lost or late
        earlier report loses no energy: it is the household's own running total."""
        h = self.households.get(household)
        if h is None:
            raise ContractError(f"household {household!r} is not registered")
        values = [export_since_last_kwh] + ([] if export_in_interval_kwh is None else [export_in_interval_kwh])
        if not h.storage:
            soc_frac = 0.0  # a meter has no SoC; it is not used
        if not (0.0 <= soc_frac <= 1.0) or not all(math.isfinite(v) for v in values):
            raise ContractError(f"household {household!r}: SoC {soc_frac!r} outside 0..1 or a non-finite export "
                                f"{values!r}")
        h.soc_frac = float(soc_frac)
        h.export_since_last_kwh = float(export_since_last_kwh)
        if export_in_interval_kwh is None:
            h.export_in_interval_kwh += float(export_since_last_kwh)
        else:
            h.export_in_interval_kwh = float(export_in_interval_kwh)
        h.reported = True

    def _series(self, series: list[float], default: float) -> float:
        k = self.interval
        return series[k] if 0 <= k < len(series) and math.isfinite(series[k]) else default

    def remaining_kwh(self, rounds_left: int = 0) -> float:
        """RE^{t,A} = E_c^t − Σ_k E_e^{t,k} (eq. (12)), minus, with ``anticipate_meters``, each reporting meter's
        export since its last report times ``rounds_left`` (the rounds still to come in the interval)."""
        committed = self._series(self.committed_kwh, 0.0)
        re = committed - sum(h.export_in_interval_kwh for h in self.households.values())
        if self.anticipate_meters and rounds_left > 0:
            re -= sum(h.export_since_last_kwh for h in self.households.values()
                      if h.reported and not h.storage) * int(rounds_left)
        return re

    def compute(self, rounds_left: int = 0) -> dict[str, Reply]:
        """One round: RE^{t,A} and every household's weights (eqs. (10)–(12), edge cases in the module doc).
        ``rounds_left``: rounds of the interval after this one (the meters' anticipated export)."""
        self.rounds += 1
        target = self._series(self.soc_target_frac, 0.0)
        mode = self._series(self.mode_s, 0.0)
        committed = abs(self._series(self.committed_kwh, 0.0)) > ENERGY_TOL_KWH or self.target_without_commitment
        re = self.remaining_kwh(rounds_left)
        reported = [name for name, h in self.households.items() if h.reported and h.storage]
        either = self.w_export_rule == "or"

        def shares(h: _Household) -> bool:
            # compared with the EVM's resolution (half a mWh, half a ppm), the same in both engines: an export of
            # -5e-17 kWh is floating-point noise of a household that exported nothing, not an import
            exported, high = h.export_since_last_kwh >= -ENERGY_TOL_KWH, h.soc_frac >= target - SOC_TOL_FRAC
            return (exported or high) if either else (exported and high)

        w_e_raw = {n: self.households[n].soc_frac if shares(self.households[n]) else 0.0 for n in reported}
        w_i_raw = {n: 1.0 - self.households[n].soc_frac for n in reported}
        w_e, w_i = _normalised(w_e_raw), _normalised(w_i_raw)
        return {name: Reply(re, w_e.get(name, 0.0), w_i.get(name, 0.0), target, mode, self.interval, committed)
                for name, h in self.households.items() if h.storage}


def _normalised(raw: dict[str, float]) -> dict[str, float]:
    """Weights summing to 1; equal shares when they sum to 0 (module doc)."""
    total = sum(raw.values())
    if not raw:
        return {}
    if total <= 0:
        return {n: 1.0 / len(raw) for n in raw}
    return {n: v / total for n, v in raw.items()}
