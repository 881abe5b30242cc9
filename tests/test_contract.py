"""The smart contract's rules (Couraud et al. 2022, eqs. (7), (10)-(12)) and the edge cases the paper leaves open."""

from __future__ import annotations

import math

import pytest

from dercosim.markets.contract import ContractError, SmartContract


def contract(n: int = 3, committed: float = 6.0, target: float = 0.5, rule: str = "or") -> SmartContract:
    c = SmartContract(w_export_rule=rule)
    for k in range(n):
        c.register(f"h{k}")
    c.set_series([target, target], [committed, 2.0], [1.0, 0.0])
    c.start_interval(0)
    return c


def test_weights_sum_to_one_and_follow_the_soc():
    c = contract(rule="and")
    c.update("h0", 0.9, 0.2)
    c.update("h1", 0.6, 0.1)
    c.update("h2", 0.3, 0.0)  # below the target: no export share
    r = c.compute()
    assert sum(x.w_export for x in r.values()) == pytest.approx(1.0)
    assert sum(x.w_import for x in r.values()) == pytest.approx(1.0)
    assert r["h0"].w_export == pytest.approx(0.9 / 1.5) and r["h1"].w_export == pytest.approx(0.6 / 1.5)
    assert r["h2"].w_export == 0.0
    assert r["h2"].w_import == pytest.approx(0.7 / (0.1 + 0.4 + 0.7))  # the emptiest battery takes the most


def test_w_e_under_the_and_rule_needs_both_an_export_and_a_soc_at_the_target():
    c = contract(2, rule="and")
    c.update("h0", 0.8, -0.1)  # above the target but importing: 0
    c.update("h1", 0.6, 0.05)
    r = c.compute()
    assert r["h0"].w_export == 0.0 and r["h1"].w_export == 1.0


def test_the_or_rule_admits_a_home_below_the_target_that_has_exported():
    """Eq. (11) as the authors' code reads it: a home below the SoC target that exported since its last report
    shares a large evening commitment; under AND it was shut out. A home below the target that imported does not."""
    c = contract(3, target=0.5)
    c.update("h0", 0.9, 0.1)  # above the target, exported
    c.update("h1", 0.3, 0.2)  # below the target, exported: in under OR
    c.update("h2", 0.2, -0.3)  # below the target, imported: out under both
    r = c.compute()
    assert r["h1"].w_export == pytest.approx(0.3 / 1.2) and r["h0"].w_export == pytest.approx(0.9 / 1.2)
    assert r["h2"].w_export == 0.0
    high = contract(2, target=0.5)
    high.update("h0", 0.8, -0.1)  # above the target but importing: in under OR
    high.update("h1", 0.6, 0.05)
    assert high.compute()["h0"].w_export == pytest.approx(0.8 / 1.4)
    literal = contract(3, target=0.5, rule="and")
    for args in (("h0", 0.9, 0.1), ("h1", 0.3, 0.2), ("h2", 0.2, -0.3)):
        literal.update(*args)
    assert literal.compute()["h1"].w_export == 0.0


def test_an_interval_with_nothing_committed_sends_no_target():
    """No commitment, no RE: the homes serve themselves instead of importing to cancel the plants' export."""
    c = SmartContract()
    for name in ("h0", "h1"):
        c.register(name)
    c.register("plant", storage=False)
    c.set_series([0.5, 0.5], [0.0, 3.0], [0.0, 1.0])
    c.start_interval(0)
    c.update("h0", 0.6, 0.0)
    c.update("h1", 0.6, 0.0)
    c.update("plant", 0.0, 4.0, 4.0)  # the plant exports: RE^{t,A} = -4 kWh
    r = c.compute(rounds_left=3)
    assert r["h0"].re_fleet_kwh < 0 and not r["h0"].committed
    assert r["h0"].re_household_kwh(0.0) == 0.0 and r["h1"].re_household_kwh(-0.7) == 0.0
    c.start_interval(1)  # a committed interval: the target is back
    c.update("h0", 0.6, 0.0)
    c.update("h1", 0.6, 0.0)
    r = c.compute()
    assert r["h0"].committed and r["h0"].re_household_kwh(0.0) == pytest.approx(1.5)
    old = _home_and_plant(0.0, 4.0, target_without_commitment=True)  # the earlier reading, kept as an option
    assert old.compute()["h0"].re_household_kwh(0.0) == pytest.approx(-4.0)  # import to cancel the plant


def _home_and_plant(committed_kwh: float, plant_kwh: float, **options) -> SmartContract:
    """A contract with one battery home (SoC 0.6, nothing exported) and a plant that exported ``plant_kwh`` in
    its first report of interval 0."""
    c = SmartContract(**options)
    c.register("h0")
    c.register("plant", storage=False)
    c.set_series([0.5], [committed_kwh], [1.0 if committed_kwh else 0.0])
    c.start_interval(0)
    c.update("h0", 0.6, 0.0)
    c.update("plant", 0.0, plant_kwh, plant_kwh)
    return c


def test_the_meters_expected_remaining_export_is_anticipated():
    """A plant exporting 1 kWh per round with 4 rounds left will export ~4 kWh more: the batteries are asked for
    the rest only (without anticipation they would be asked for all of it and over-deliver)."""
    for anticipate, expected in ((True, 20.0 - 1.0 - 4 * 1.0), (False, 20.0 - 1.0)):
        c = _home_and_plant(20.0, 1.0, anticipate_meters=anticipate)
        assert c.compute(rounds_left=4)["h0"].re_fleet_kwh == pytest.approx(expected)


def test_remaining_export_falls_by_exactly_what_households_report():
    c = contract(committed=6.0)
    assert c.remaining_kwh() == 6.0
    c.update("h0", 0.7, 1.25)
    c.update("h1", 0.7, 0.5)
    assert c.compute()["h2"].re_fleet_kwh == pytest.approx(6.0 - 1.75)
    c.update("h0", 0.7, 0.25)  # a second report adds to the interval's export
    c.update("h2", 0.7, -0.5)  # an import counts negative: more left to export
    assert c.compute()["h0"].re_fleet_kwh == pytest.approx(6.0 - 1.75 - 0.25 + 0.5)


def test_the_household_target_is_its_share_minus_what_it_exported_since():
    c = contract(2, committed=4.0)
    c.update("h0", 0.8, 0.0)
    c.update("h1", 0.8, 0.0)
    r = c.compute()["h0"]
    assert r.re_household_kwh(0.5) == pytest.approx(4.0 * 0.5 - 0.5)
    c.update("h0", 0.8, 3.0)  # the fleet over-delivered: RE < 0, the import weights apply
    c.update("h1", 0.2, 2.0)
    r = c.compute()
    assert r["h0"].re_fleet_kwh == pytest.approx(-1.0)
    assert r["h1"].re_household_kwh(0.0) == pytest.approx(-1.0 * 0.8 / 1.0)


def test_the_interval_reset_forgets_exports_and_reports():
    c = contract(committed=6.0)
    c.update("h0", 0.7, 2.0)
    c.start_interval(1)
    assert c.remaining_kwh() == 2.0  # the next interval's commitment, nothing exported yet
    r = c.compute()
    assert r["h0"].w_export == 0.0 and r["h0"].interval == 1 and r["h0"].mode_s == 0.0


def test_when_nobody_qualifies_the_share_is_split_equally_among_those_who_reported():
    c = contract(3, target=0.9)
    c.update("h0", 0.5, -0.1)
    c.update("h1", 0.4, -0.2)  # both below the 0.9 target and importing: Σ W_e = 0
    r = c.compute()
    assert r["h0"].w_export == r["h1"].w_export == 0.5
    assert r["h2"].w_export == 0.0 and r["h2"].w_import == 0.0  # never reported: no share
    full = contract(2)
    full.update("h0", 1.0, 0.0)
    full.update("h1", 1.0, 0.0)  # Σ W_i = 0: both full
    assert full.compute()["h0"].w_import == 0.5


def test_nobody_reported_means_nobody_gets_a_share():
    r = contract().compute()
    assert all(x.w_export == 0 and x.w_import == 0 for x in r.values())
    assert r["h0"].re_fleet_kwh == 6.0


def test_bad_calls_are_refused():
    c = contract()
    with pytest.raises(ContractError, match="not registered"):
        c.update("stranger", 0.5, 0.0)
    with pytest.raises(ContractError, match="already registered"):
        c.register("h0")
    with pytest.raises(ContractError, match="outside 0..1"):
        c.update("h0", 1.2, 0.0)
    with pytest.raises(ContractError, match="non-finite"):
        c.update("h0", 0.5, math.nan)
    with pytest.raises(ContractError, match="one value per interval"):
        c.set_series([0.5], [1.0, 2.0], [0.0])


# ---------------------------------------------------------------- the contract simulator and its messages

def _drive(sim, minutes: int, meter_kw: float = -3.0, soc: float = 0.7, committed: float = 10.0) -> list[dict]:
    out = []
    for k in range(minutes):
        t = 60 * k
        inputs = {"contract": {"committed_kwh": {"m": committed}, "soc_target_frac": {"m": 0.5},
                               "mode_s": {"m": 1.0}}}
        for name in sim.names:
            inputs[f"sc_{name}"] = {"meter_kw": {"b": meter_kw}, "soc_frac": {"b": soc}}
        sim.step(t, inputs, 10 ** 9)
        out.append(sim.get_data({"contract": ["contract_rounds", "reports_late", "re_fleet_kwh"],
                                 "sc_h0": ["re_kwh", "w_export"]}))
    return out


def _sim(latency: dict, round_s: int = 300, loss_prob: float = 0.0, seed: int = 1):
    from dercosim.sims.contract import ContractSim

    sim = ContractSim()
    sim.init("C", round_s=round_s, window_s=10.0, interval_s=1800, households=["h0", "h1"], latency=latency,
             loss_prob=loss_prob, seed=seed)
    sim.create(1, "Contract")
    sim.create(2, "Member")
    return sim


def test_reports_in_time_are_used_in_their_round_and_re_counts_the_exports():
    sim = _sim({"kind": "constant", "a": 1.0})
    out = _drive(sim, 12)  # two households exporting 3 kW each for 12 minutes
    last = out[-1]
    assert last["contract"]["contract_rounds"] == 3 and last["contract"]["reports_late"] == 0  # t = 0, 300, 600
    # the round at t = 600 s counted minutes 0..10 of both (a report goes at the end of its minute)
    assert sim.contract.remaining_kwh() == pytest.approx(10.0 - 2 * 3.0 * 11 / 60)
    assert last["sc_h0"]["w_export"] == pytest.approx(0.5)


def test_a_report_slower_than_the_round_is_late_counted_and_used_in_the_next_round():
    fast, slow = _sim({"kind": "constant", "a": 1.0}), _sim({"kind": "constant", "a": 400.0})
    a, b = _drive(fast, 16), _drive(slow, 16)
    assert b[-1]["contract"]["reports_late"] > 0 and a[-1]["contract"]["reports_late"] == 0
    # the slow contract knows less at any time, but nothing is lost: the late reports carry the interval total
    assert slow.contract.remaining_kwh() > fast.contract.remaining_kwh()
    late_total = _drive(_sim({"kind": "constant", "a": 400.0}), 22)[-1]
    assert late_total["contract"]["reports_late"] >= 4


def test_same_seed_same_messages():
    lat = {"kind": "lognormal", "a": 60.0, "b": 1.5}
    one, two = _drive(_sim(lat, loss_prob=0.2), 30), _drive(_sim(lat, loss_prob=0.2), 30)
    assert one == two
    other = _drive(_sim(lat, loss_prob=0.2, seed=2), 30)
    assert other != one


def test_a_meter_without_storage_counts_in_re_but_gets_no_weight_and_no_reply():
    """The aggregator's plant exported 3 kWh more than the households: RE is the portfolio's remainder, and only
    the batteries are asked to close it."""
    c = contract(2, committed=4.0)
    c.register("plant", storage=False)
    c.start_interval(0)
    c.update("h0", 0.8, 0.5)
    c.update("h1", 0.6, 0.5)
    c.update("plant", math.nan, 6.0)  # a plant has no SoC
    r = c.compute()
    assert set(r) == {"h0", "h1"}
    assert r["h0"].re_fleet_kwh == pytest.approx(4.0 - 7.0)  # over-delivered: the batteries must import
    assert r["h0"].w_import + r["h1"].w_import == pytest.approx(1.0)
    assert r["h1"].w_import == pytest.approx(0.4 / 0.6)


def test_floating_point_noise_is_not_an_import_and_both_engines_read_it_alike():
    """A household that exported nothing reports about -5e-17 kWh after summing its minutes: it keeps its export
    weight in the Python rules as on the EVM, which rounds energy to mWh; a real import of 1 mWh does not."""
    from dercosim.markets.contract import ENERGY_TOL_KWH
    from dercosim.markets.contract_evm import to_mwh

    c = contract(3, target=0.9)  # all below the target: the export decides (OR rule)
    c.update("h0", 0.8, -5e-17)
    c.update("h1", 0.6, 0.05)
    c.update("h2", 0.7, -1e-6)  # 1 mWh imported
    r = c.compute()
    assert r["h0"].w_export == pytest.approx(0.8 / 1.4) and r["h2"].w_export == 0.0
    for kwh in (-5e-17, -4e-7, -6e-7, -1e-6, 0.0, 3e-7):
        assert (kwh >= -ENERGY_TOL_KWH) == (to_mwh(kwh) >= 0), kwh


def test_in_an_interval_with_nothing_committed_no_home_is_given_a_target_to_track():
    """The contract simulator end to end (reports over the network, replies, RE^{t,k} per member): with nothing
    committed and the plant exporting, every home's RE is 0, so its MPC has no reason to import to cancel the
    plant (313 of 402 kWh of s4's home imports on 1 June 2016 were that); with a commitment the target returns."""
    from dercosim.sims.contract import ContractSim

    def run(committed: float) -> list[dict]:
        sim = ContractSim()
        sim.init("C", round_s=300, window_s=10.0, interval_s=1800, households=["h0", "h1"], meters=["plant"],
                 latency={"kind": "constant", "a": 1.0}, seed=1)
        sim.create(1, "Contract")
        sim.create(3, "Member")
        out = []
        for k in range(20):
            inputs = {"contract": {"committed_kwh": {"m": committed}, "soc_target_frac": {"m": 0.5},
                                   "mode_s": {"m": 1.0}},
                      "sc_h0": {"meter_kw": {"b": 0.0}, "soc_frac": {"b": 0.6}},
                      "sc_h1": {"meter_kw": {"b": 0.0}, "soc_frac": {"b": 0.6}},
                      "sc_plant": {"meter_kw": {"b": -40.0}}}  # the plant exports 40 kW
            sim.step(60 * k, inputs, 10 ** 9)
            out.append(sim.get_data({"contract": ["re_fleet_kwh"], "sc_h0": ["re_kwh"], "sc_h1": ["re_kwh"]}))
        return out

    idle = run(0.0)
    assert idle[-1]["contract"]["re_fleet_kwh"] < -5  # the plant is "ahead" of a commitment of nothing
    assert all(o["sc_h0"]["re_kwh"] == 0.0 and o["sc_h1"]["re_kwh"] == 0.0 for o in idle)
    busy = run(30.0)
    assert busy[-1]["sc_h0"]["re_kwh"] > 0  # a commitment beyond the plant's anticipated export: a target



def test_messages_arrive_in_the_order_a_delivering_process_gives_them():
    """The network delivers without a simpy process per message; every arrival, and everything that waits on
    one, happens in the same order as with a process per message (latency, then the put): ties of equal
    latency, a sender that waits exactly the latency after sending, timers started before and after."""
    import numpy as np
    import simpy

    from dercosim.markets.network import Latency, Network

    class ByProcess(Network):  # one process per message, the plain way
        def send(self, src: str, dst: str, payload: object) -> None:
            self.sent += 1
            delay = self.latency.draw(self.rng)

            def deliver():  # noqa: ANN202 - simpy generator
                yield self.env.timeout(max(delay, 0.0))
                yield self.inbox(dst).put(payload)

            self.env.process(deliver())

    def trace(kind: type[Network]) -> list[tuple[float, str]]:
        env = simpy.Environment()
        net = kind(env, np.random.default_rng(0), Latency("constant", 2.0))
        seen: list[tuple[float, str]] = []

        def timer(name: str, wait_s: float):  # noqa: ANN202 - simpy generator
            yield env.timeout(wait_s)
            seen.append((env.now, name))

        def receiver(node: str):  # noqa: ANN202 - simpy generator
            while True:
                msg = yield net.inbox(node).get()
                seen.append((env.now, f"{node} got {msg}"))

        def sender():  # noqa: ANN202 - simpy generator (it reads its box as the contract does at a round's close)
            for k in range(3):
                net.send("s", "c", f"p{k}")
                yield env.timeout(2.0)  # exactly the latency
                seen.append((env.now, f"sender woke {k}, c holds {len(net.inbox('c').items)}"))

        env.process(receiver("b"))
        env.process(timer("timer before", 2.5))
        env.run(until=0.5)
        env.process(sender())
        env.process(timer("timer after", 2.0))
        for k in range(3):
            net.send("a", "b", f"m{k}")
        env.run()
        return seen

    seen = trace(Network)
    assert seen == trace(ByProcess)
    # a sender waiting exactly the latency wakes before its message arrives (with the latency's timeout made as
    # the message is sent, it would find it there); messages of equal latency in the order sent
    assert seen == [(2.5, "timer before"), (2.5, "sender woke 0, c holds 0"), (2.5, "timer after"),
                    (2.5, "b got m0"), (2.5, "b got m1"), (2.5, "b got m2"), (4.5, "sender woke 1, c holds 1"),
                    (6.5, "sender woke 2, c holds 2")]
