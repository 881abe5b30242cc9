"""mosaik simulator of the smart contract and its messages (Couraud et al. 2022, section III-B).

One ``Contract`` entity (it reads the aggregator's commitment ``committed_kwh``,
``soc_target_frac`` and ``mode_s`` of the current market interval) and one
``Member`` entity per registered household (it reads the household's battery:
``meter_kw``, the net power at the meter, and ``soc_frac``; it writes what the
household's HEMS reads: ``re_kwh`` = RE^{t,k}, ``s_mode``, ``soc_target_frac``)
and per other meter of the portfolio (a plant, a household without a battery:
it reads ``meter_kw`` only; its exports count in RE^{t,A}).

Every ``round_s`` seconds each member sends a report (its SoC and its net
export since its last report) over the seeded simpy network
(:mod:`dercosim.markets.network`: latency per message, loss); the round
closes ``window_s`` later with the reports that have arrived. A report that
arrives after its round closed is counted as late and used in the next
round (one from an earlier market interval is counted and dropped). Each
report carries the household's net export since the interval started, as
the paper's HEMS sends it, so a lost or late report loses no energy. The contract then computes RE^{t,A}
and the weights (:class:`dercosim.markets.contract.SmartContract`: eq. (11) read OR, no RE where nothing is
committed, the meters' export anticipated over the rounds left in the interval, which this simulator
counts from the round's time) and replies; a member whose reply is lost keeps its last RE and weights. A
member's ``re_kwh`` is its share of the last reply minus what it exported
since that reply arrived (eq. (7)). The simulator steps every minute (the
meters are minute values); messages are delivered at their simulated
arrival time and take effect from the next minute.
"""

from __future__ import annotations

from collections.abc import Sequence

import math
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import simpy

from dercosim.markets.contract import ContractError, Reply, SmartContract
from dercosim.markets.contract_evm import MWH_PER_KWH, PPM, to_mwh, to_ppm
from dercosim.markets.network import Latency, Network
from dercosim.sims.entities import hand_out
from dercosim.sims.pacing import paced
from dercosim.sims.tables import gathered, positions, tabled

CONTRACT_OUT = ["contract_rounds", "reports_late", "reports_lost", "replies_lost", "re_fleet_kwh",
                "contract_rejected"]
#: engine "evm": per minute, the gas and EVM wall time of the rounds that closed in it (NaN in other minutes)
#: and the largest difference between the EVM's replies and the Python rules' on the same inputs
EVM_OUT = ["evm_round_gas", "evm_round_ms", "evm_weight_diff_max", "evm_re_diff_kwh"]
MEMBER_OUT = ["re_kwh", "s_mode", "soc_target_frac", "w_export", "w_import"]
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Contract": {"public": True, "params": [],
                     "attrs": ["committed_kwh", "mode_s", "soc_target_frac"] + CONTRACT_OUT + EVM_OUT},
        "Member": {"public": True, "params": [], "attrs": ["meter_kw", "soc_frac"] + MEMBER_OUT},
    },
}


#: a reported SoC this far outside 0..1 is rounding, clipped; further out it is sent and the contract refuses it
SOC_TOLERANCE = 1e-9


class _Member:
    def __init__(self) -> None:
        self.export_since_report_kwh = 0.0
        self.export_in_interval_kwh = 0.0
        self.export_since_reply_kwh = 0.0
        self.soc_frac = math.nan
        self.reply: Reply | None = None


@tabled
@paced
class ContractSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.n_created = 0
        self.contract_eid: str | None = None

    def init(self, sid: str, time_resolution: float = 1.0, step_s: int = 60, round_s: int = 300,
             window_s: float = 10.0, interval_s: int = 1800, start_s_of_day: int = 0,
             households: Sequence[str] = (), latency: dict[str, Any] | None = None, loss_prob: float = 0.0,
             seed: int = 0, engine: str = "python", evm_fork: str = "prague", evm_mode: str = "batched",
             gas_log_path: str | None = None, meters: Sequence[str] = (), w_export_rule: str = "or",
             anticipate_meters: bool = True, target_without_commitment: bool = False) -> Meta:
        """``households``: the battery households (weights, RE); ``meters``: the portfolio's other meters (the
        aggregator's plants, households without a battery), whose exports count in RE only;
        ``engine``: "python" (the rules in Python) or "evm" (the Vyper contract on an in-process py-evm
        chain; the Python rules run beside it on the same rounded inputs as the reference);
        ``gas_log_path``: where the EVM's gas per transaction is written at the end (JSON);
        ``w_export_rule``, ``anticipate_meters``, ``target_without_commitment``: see :class:`dercosim.markets.contract.SmartContract`."""
        from dercosim.timeseries.rng import rng_for

        if interval_s % round_s or round_s % step_s:
            raise ValueError(f"round_s ({round_s}) must divide the market interval ({interval_s}) and be whole "
                             f"steps of {step_s} s")
        self.step_s, self.round_s, self.window_s = int(step_s), int(round_s), float(window_s)
        self.interval_s, self.start_s_of_day = int(interval_s), int(start_s_of_day)
        self.names = list(households) + list(meters)
        meter_names = set(meters)
        self.storage = {name: name not in meter_names for name in self.names}
        if engine not in ("python", "evm"):
            raise ValueError(f"engine must be 'python' or 'evm', got {engine!r}")
        self.contract = SmartContract(w_export_rule, anticipate_meters, target_without_commitment)
        self.evm = None
        if engine == "evm":
            from dercosim.markets.contract_evm import EVMContract

            self.evm = EVMContract(self.names, fork=evm_fork, mode=evm_mode, w_export_rule=w_export_rule,
                                   anticipate_meters=anticipate_meters,
                                   target_without_commitment=target_without_commitment)
        self.gas_log_path = gas_log_path
        for name in self.names:
            self.contract.register(name, storage=self.storage[name])
            if self.evm is not None:
                self.evm.register(name, storage=self.storage[name])
        self._evm_sent_series: tuple[Any, ...] | None = None
        self._evm_step: dict[str, float] = {}
        self.members = {name: _Member() for name in self.names}
        self._member_list = list(self.members.values())
        self.index = {f"sc_{name}": j for j, name in enumerate(self.names)}  # member entity -> position
        self.env = simpy.Environment()
        self.network = Network(self.env, rng_for(int(seed), "contract_network"), Latency(**(latency or {})),
                               loss_prob=float(loss_prob))
        self.rounds = 0
        self.late = 0
        self.rejected = 0
        self.replies_lost = 0
        self.interval: int | None = None
        self.series = {"committed_kwh": 0.0, "soc_target_frac": math.nan, "mode_s": 0.0}
        self.re_sent_kwh = 0.0  #: RE^{t,A} of the last round
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        if model == "Contract":
            if num != 1 or self.contract_eid is not None:
                raise ValueError("ContractSim holds exactly one Contract")
            self.contract_eid = "contract"
            return [{"eid": self.contract_eid, "type": model}]
        entities, self.n_created = hand_out([f"sc_{n}" for n in self.names], self.n_created, num, model, "members")
        return entities

    # ------------------------------------------------------------ messages

    def _close_round(self, round_no: int, sent_s: int) -> Any:
        """A process: wait for the window, take the reports that arrived, compute, reply."""
        yield self.env.timeout(self.window_s)
        inbox = self.network.inbox("contract")
        while inbox.items:
            report = inbox.items.pop(0)
            if report["round"] < round_no:
                self.late += 1
            if report["interval"] != self.interval:
                continue  # a report of an earlier interval: its energy belonged there
            args = (report["household"], report["soc_frac"], report["export_kwh"], report["export_in_interval_kwh"])
            if self.evm is not None:  # what goes on chain is rounded: the Python reference gets the same numbers
                soc = to_ppm(args[1]) / PPM if math.isfinite(args[1]) else args[1]  # a meter has none
                args = (args[0], soc, to_mwh(args[2]) / MWH_PER_KWH, to_mwh(args[3]) / MWH_PER_KWH)
            accepted = True
            try:
                self.contract.update(*args)
            except ContractError:
                accepted = False
            if self.evm is not None and (accepted or self.evm.mode == "batched"):  # batched: the chain rejects it
                try:
                    self.evm.update(*args)
                except ContractError:  # a reverted transaction
                    accepted = False
            if not accepted:
                self.rejected += 1  # counted; that household's report is treated as lost
        self._apply_series()
        rounds_left = self._rounds_left(sent_s)
        replies = self.contract.compute(rounds_left)
        self.re_sent_kwh = self.contract.remaining_kwh(rounds_left)
        if self.evm is not None:
            replies = self._evm_round(replies, rounds_left)
        self.rounds += 1
        for name, reply in replies.items():
            lost_before = self.network.lost
            self.network.send("contract", name, reply)
            self.replies_lost += self.network.lost - lost_before

    def _rounds_left(self, sent_s: int) -> int:
        """Rounds' worth of the current interval left after the reports sent at ``sent_s``: how long the meters'
        last reported rate (their export over the last round) is expected to go on."""
        into = (self.start_s_of_day + sent_s) % self.interval_s
        return (self.interval_s - into) // self.round_s

    def _apply_series(self) -> None:
        k = self.interval if self.interval is not None else 0
        s = self.series
        target = s["soc_target_frac"] if math.isfinite(s["soc_target_frac"]) else 0.0
        if self.evm is None:
            self.contract.set_series([target], [s["committed_kwh"]], [s["mode_s"]], first_interval=k)
            return
        sent = (k, to_ppm(target), to_mwh(s["committed_kwh"]), int(round(s["mode_s"])))
        self.contract.set_series([sent[1] / PPM], [sent[2] / MWH_PER_KWH], [float(sent[3])], first_interval=k)
        if sent != self._evm_sent_series:  # a transaction only when the aggregator's numbers change
            self.evm.set_series([target], [s["committed_kwh"]], [s["mode_s"]], first_interval=k)
            self._evm_sent_series = sent

    def _evm_round(self, reference: dict[str, Reply], rounds_left: int) -> dict[str, Reply]:
        """The round on chain; its replies are what the members get. Gas and the gap to the Python rules are
        kept for this minute's record."""
        assert self.evm is not None  # engine "evm"
        try:
            replies = self.evm.compute(rounds_left)
        except ContractError:  # the round's transaction reverted: counted; this round's Python replies go out
            self.evm.failed_rounds += 1
            return reference
        gap_w = max((max(abs(replies[n].w_export - r.w_export), abs(replies[n].w_import - r.w_import))
                     for n, r in reference.items()), default=0.0)
        gap_re = max((abs(replies[n].re_fleet_kwh - r.re_fleet_kwh) for n, r in reference.items()), default=0.0)
        step = self._evm_step
        step["evm_round_gas"] = step.get("evm_round_gas", 0.0) + self.evm.gas.round_gas[-1]
        step["evm_round_ms"] = step.get("evm_round_ms", 0.0) + 1000.0 * self.evm.gas.round_wall_s[-1]
        step["evm_weight_diff_max"] = max(step.get("evm_weight_diff_max", 0.0), gap_w)
        step["evm_re_diff_kwh"] = max(step.get("evm_re_diff_kwh", 0.0), gap_re)
        return replies

    def _receive_replies(self) -> None:
        for name, member in self.members.items():
            box = self.network.inboxes.get(name)
            while box is not None and box.items:
                member.reply = box.items.pop(0)
                member.export_since_reply_kwh = 0.0

    # ------------------------------------------------------------ mosaik

    def step(self, time: int, inputs: dict[str, dict[str, dict[str, Any]]], max_advance: int) -> int:
        self._evm_step = {}
        if time > self.env.now:  # deliver every message due by now
            self.env.run(until=time)
        self._receive_replies()
        given = inputs.get(self.contract_eid or "", {})
        for attr in self.series:
            if given.get(attr):
                self.series[attr] = float(sum(given[attr].values()))
        interval = (self.start_s_of_day + time) // self.interval_s
        if interval != self.interval:
            self.interval = interval
            self._apply_series()
            self.contract.start_interval(interval)
            self.re_sent_kwh = self.contract.remaining_kwh()  # the new commitment, until the first round closes
            if self.evm is not None:
                self.evm.start_interval(interval)
            for m in self.members.values():  # (the export since the last report runs on: it is a rate)
                m.export_in_interval_kwh = 0.0
        step_h = self.step_s / 3600.0
        meter_kw, meter_n = gathered(self, "meter_kw")
        soc_frac, soc_n = gathered(self, "soc_frac")
        for m, has_meter, export, has_soc, soc in zip(self._member_list, meter_n.tolist(),
                                                      (-meter_kw * step_h).tolist(), soc_n.tolist(),
                                                      soc_frac.tolist()):
            if has_meter:
                m.export_since_report_kwh += export
                m.export_in_interval_kwh += export
                m.export_since_reply_kwh += export
            if has_soc:
                # float noise at the bounds (a battery emptied to -2e-20) is not a broken sensor
                m.soc_frac = min(max(soc, 0.0), 1.0) if -SOC_TOLERANCE <= soc <= 1.0 + SOC_TOLERANCE else soc
        if time % self.round_s == 0:
            round_no = self.rounds
            for name, m in self.members.items():
                if self.storage[name] and not math.isfinite(m.soc_frac):
                    continue
                self.network.send(name, "contract", {"household": name, "soc_frac": m.soc_frac,
                                                     "export_kwh": m.export_since_report_kwh,
                                                     "export_in_interval_kwh": m.export_in_interval_kwh,
                                                     "round": round_no, "interval": self.interval})
                m.export_since_report_kwh = 0.0
            self.env.process(self._close_round(round_no, time))
        return time + self.step_s

    #: the members' meters and SoCs arrive as arrays (sims/tables.py), not per-member dicts
    column_inputs = ("meter_kw", "soc_frac")

    def column(self, attr: str, eids: list[str]) -> list[float] | None:
        """A member output of the members ``eids`` as a list (a simulator's Table, sims/tables.py; the same
        numbers as :meth:`get_data`); None for anything else."""
        if attr not in MEMBER_OUT:
            return None
        try:
            members = [self._member_list[j] for j in positions(self, eids).tolist()]
        except KeyError:  # not all members (the Contract entity): through get_data
            return None
        return self._member_values(attr, members)

    @staticmethod
    def _member_values(attr: str, members: list[_Member]) -> list[float]:
        """A member output (one of ``MEMBER_OUT``) of each of ``members``, from its last reply (none yet: no
        RE, S = 0, no target, no weights)."""
        if attr == "re_kwh":
            return [m.reply.re_household_kwh(m.export_since_reply_kwh) if m.reply else 0.0 for m in members]
        if attr == "s_mode":
            return [m.reply.mode_s if m.reply else 0.0 for m in members]
        if attr == "soc_target_frac":
            return [m.reply.soc_target_frac if m.reply else math.nan for m in members]
        return [getattr(m.reply, attr) if m.reply else math.nan for m in members]  # w_export, w_import

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid == self.contract_eid:
                values = {"contract_rounds": float(self.rounds), "reports_late": float(self.late),
                          "reports_lost": float(self._reports_lost()), "replies_lost": float(self.replies_lost),
                          "re_fleet_kwh": float(self.re_sent_kwh),
                          "contract_rejected": float(self.rejected),
                          **{a: self._evm_step.get(a, math.nan) for a in EVM_OUT}}
            else:
                m = self.members[eid.removeprefix("sc_")]
                values = {a: self._member_values(a, [m])[0] for a in attrs if a in MEMBER_OUT}
            data[eid] = {a: values[a] for a in attrs if a in values}
        return data

    def _reports_lost(self) -> int:
        return int(self.network.lost - self.replies_lost)

    def finalize(self) -> None:
        """Write the EVM's gas per transaction (``gas_log_path``; atomically)."""
        if self.evm is None or not self.gas_log_path:
            return
        import json
        import os
        from dataclasses import asdict

        path = self.gas_log_path
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"summary": self.evm.gas_summary(), "transactions": asdict(self.evm.gas)}, fh)
        os.replace(tmp, path)
