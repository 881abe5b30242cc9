# pragma version ~=0.4.3
"""
@title Fleet coordination contract (Couraud et al. 2022, section III-B), dercosim
@notice The rules of dercosim.markets.contract.SmartContract in fixed point:
        SoC, SoC target and weights in ppm (1,000,000 = 1), energies in mWh
        (1e-6 kWh, signed: + = export). Each round computes
        RE = E_c - sum of the reported exports since the interval start (12), minus
        (anticipate) each meter's last report times the rounds left, and the weights
        w_e (10)-(11, the OR rule, or AND) and w_i, and logs them in one Round event
        with whether the interval has a commitment (without one there is no RE).
        Members with storage (battery households) get weights; meters without storage (the
        aggregator's plants, households without a battery) count in RE only.
        Edge cases as the Python contract: when no reporting household qualifies
        (sum W = 0) the share is split equally among those that reported; a household
        that has not reported in the interval gets weight 0 and counts 0.
@dev    Reports of an interval are marked with the interval (reported_in = interval + 1),
        so starting an interval writes one slot, not one per household.
"""

MAX_MEMBERS: constant(uint256) = 1024
MAX_SERIES: constant(uint256) = 96
SCALE: constant(int256) = 1000000

event Registered:
    household: indexed(address)
    index: uint256

event Rejected:
    index: uint256
    reason: uint256  # 1: not a member, 2: SoC outside 0..1

event Round:
    interval: uint256
    round_no: uint256
    re_mwh: int256
    soc_target_ppm: int256
    mode_s: uint256
    committed: bool
    w_export_ppm: DynArray[int256, MAX_MEMBERS]
    w_import_ppm: DynArray[int256, MAX_MEMBERS]

aggregator: public(address)
members: public(DynArray[address, MAX_MEMBERS])
index_of: public(HashMap[address, uint256])  # index + 1; 0 = not registered
storage: public(HashMap[uint256, bool])  # a battery household (weights) or a meter (RE only)
soc_ppm: HashMap[uint256, int256]
export_last_mwh: HashMap[uint256, int256]
export_interval_mwh: HashMap[uint256, int256]
reported_in: HashMap[uint256, uint256]  # interval + 1 of the household's last report
interval: public(uint256)
committed_mwh: public(HashMap[uint256, int256])
soc_target_ppm: public(HashMap[uint256, int256])
mode_s: public(HashMap[uint256, uint256])
rounds: public(uint256)
w_export_or: public(bool)  # eq. (11): True = OR (the authors' code), False = AND (the paper's text)
anticipate: public(bool)  # RE subtracts the meters' expected remaining export
always_target: public(bool)  # RE also in intervals with nothing committed


@deploy
def __init__(w_export_or: bool, anticipate: bool, always_target: bool):
    self.aggregator = msg.sender
    self.w_export_or = w_export_or
    self.anticipate = anticipate
    self.always_target = always_target


@external
def register(has_storage: bool):
    """A member registers itself (its account is its identity): a battery household or a meter."""
    assert self.index_of[msg.sender] == 0, "already registered"
    self.members.append(msg.sender)
    self.index_of[msg.sender] = len(self.members)
    self.storage[len(self.members) - 1] = has_storage
    log Registered(household=msg.sender, index=len(self.members) - 1)


@external
def set_series(first: uint256, soc_target_ppm: DynArray[int256, MAX_SERIES],
               committed_mwh: DynArray[int256, MAX_SERIES], mode_s: DynArray[uint256, MAX_SERIES]):
    """The aggregator's series per market interval, from interval `first` on."""
    assert msg.sender == self.aggregator, "only the aggregator"
    assert len(soc_target_ppm) == len(committed_mwh) and len(mode_s) == len(committed_mwh), "lengths"
    for i: uint256 in range(len(committed_mwh), bound=MAX_SERIES):
        self.soc_target_ppm[first + i] = soc_target_ppm[i]
        self.committed_mwh[first + i] = committed_mwh[i]
        self.mode_s[first + i] = mode_s[i]


@external
def start_interval(k: uint256):
    """A new market interval: earlier reports no longer count."""
    assert msg.sender == self.aggregator, "only the aggregator"
    self.interval = k


@internal
def _store(i: uint256, soc: int256, export_last: int256, export_interval: int256):
    self.soc_ppm[i] = soc
    self.export_last_mwh[i] = export_last
    self.export_interval_mwh[i] = export_interval
    self.reported_in[i] = self.interval + 1


@external
def update(soc: int256, export_last: int256, export_interval: int256):
    """A household's report: SoC (ppm), net export since its last report and since the interval start (mWh)."""
    i: uint256 = self.index_of[msg.sender]
    assert i != 0, "not registered"
    assert soc >= 0 and soc <= SCALE, "SoC outside 0..1"
    self._store(i - 1, soc, export_last, export_interval)


@internal
def _update_batch(index: DynArray[uint256, MAX_MEMBERS], soc: DynArray[int256, MAX_MEMBERS],
                  export_last: DynArray[int256, MAX_MEMBERS], export_interval: DynArray[int256, MAX_MEMBERS]):
    assert len(soc) == len(index) and len(export_last) == len(index) and len(export_interval) == len(index), "lengths"
    for j: uint256 in range(len(index), bound=MAX_MEMBERS):
        if index[j] >= len(self.members):
            log Rejected(index=index[j], reason=1)
        elif soc[j] < 0 or soc[j] > SCALE:
            log Rejected(index=index[j], reason=2)
        else:
            self._store(index[j], soc[j], export_last[j], export_interval[j])


@external
def update_batch(index: DynArray[uint256, MAX_MEMBERS], soc: DynArray[int256, MAX_MEMBERS],
                 export_last: DynArray[int256, MAX_MEMBERS], export_interval: DynArray[int256, MAX_MEMBERS]):
    """The aggregator relays many reports at once; an invalid one is skipped and logged (Rejected)."""
    assert msg.sender == self.aggregator, "only the aggregator"
    self._update_batch(index, soc, export_last, export_interval)


@internal
def _compute(rounds_left: uint256):
    k: uint256 = self.interval
    target: int256 = self.soc_target_ppm[k]
    n: uint256 = len(self.members)
    w_e: DynArray[int256, MAX_MEMBERS] = []
    w_i: DynArray[int256, MAX_MEMBERS] = []
    reported: DynArray[bool, MAX_MEMBERS] = []
    exported: int256 = 0
    ahead: int256 = 0
    sum_e: int256 = 0
    sum_i: int256 = 0
    n_reported: int256 = 0
    for i: uint256 in range(n, bound=MAX_MEMBERS):
        if self.reported_in[i] == k + 1 and not self.storage[i]:
            exported += self.export_interval_mwh[i]  # a meter: counts in RE, no weights
            if self.anticipate:
                ahead += self.export_last_mwh[i] * convert(rounds_left, int256)
            w_e.append(0)
            w_i.append(0)
            reported.append(False)
        elif self.reported_in[i] == k + 1:
            soc: int256 = self.soc_ppm[i]
            exported += self.export_interval_mwh[i]
            e: int256 = 0
            if self.w_export_or:
                if self.export_last_mwh[i] >= 0 or soc >= target:
                    e = soc
            elif self.export_last_mwh[i] >= 0 and soc >= target:
                e = soc
            w_e.append(e)
            w_i.append(SCALE - soc)
            reported.append(True)
            sum_e += e
            sum_i += SCALE - soc
            n_reported += 1
        else:
            w_e.append(0)
            w_i.append(0)
            reported.append(False)
    for i: uint256 in range(n, bound=MAX_MEMBERS):
        if reported[i]:
            if sum_e > 0:
                w_e[i] = w_e[i] * SCALE // sum_e
            else:
                w_e[i] = SCALE // n_reported
            if sum_i > 0:
                w_i[i] = w_i[i] * SCALE // sum_i
            else:
                w_i[i] = SCALE // n_reported
    self.rounds += 1
    log Round(interval=k, round_no=self.rounds, re_mwh=self.committed_mwh[k] - exported - ahead,
              soc_target_ppm=target, mode_s=self.mode_s[k], committed=self.committed_mwh[k] != 0 or self.always_target,
              w_export_ppm=w_e, w_import_ppm=w_i)


@external
def compute(rounds_left: uint256):
    """One round: RE of the fleet and every household's weights, logged in a Round event."""
    assert msg.sender == self.aggregator, "only the aggregator"
    self._compute(rounds_left)


@external
def update_and_compute(index: DynArray[uint256, MAX_MEMBERS], soc: DynArray[int256, MAX_MEMBERS],
                       export_last: DynArray[int256, MAX_MEMBERS],
                       export_interval: DynArray[int256, MAX_MEMBERS], rounds_left: uint256):
    """A whole round in one transaction: the reports that arrived, then the computation."""
    assert msg.sender == self.aggregator, "only the aggregator"
    self._update_batch(index, soc, export_last, export_interval)
    self._compute(rounds_left)
