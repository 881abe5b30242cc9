"""The smart contract's rules (Couraud et al. 2022, eqs. (7), (10)-(12)) and the edge cases the paper leaves open."""

from __future__ import annotations

import math

import pytest

from dercosim.controllers.contract import ContractError, SmartContract


def contract(n: int = 3, committed: float = 6.0, target: float = 0.5) -> SmartContract:
    c = SmartContract()
    for k in range(n):
        c.register(f"h{k}")
    c.set_series([target, target], [committed, 2.0], [1.0, 0.0])
    c.start_interval(0)
    return c


def test_weights_sum_to_one_and_follow_the_soc():
    c = contract()
    c.update("h0", 0.9, 0.2)
    c.update("h1", 0.6, 0.1)
    c.update("h2", 0.3, 0.0)  # below the target: no export share
    r = c.compute()
    assert sum(x.w_export for x in r.values()) == pytest.approx(1.0)
    assert sum(x.w_import for x in r.values()) == pytest.approx(1.0)
    assert r["h0"].w_export == pytest.approx(0.9 / 1.5) and r["h1"].w_export == pytest.approx(0.6 / 1.5)
    assert r["h2"].w_export == 0.0
    assert r["h2"].w_import == pytest.approx(0.7 / (0.1 + 0.4 + 0.7))  # the emptiest battery takes the most


def test_w_e_uses_the_and_rule():
    c = contract(2)
    c.update("h0", 0.8, -0.1)  # above the target but importing: 0
    c.update("h1", 0.6, 0.05)
    r = c.compute()
    assert r["h0"].w_export == 0.0 and r["h1"].w_export == 1.0


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
    c.update("h0", 0.5, 0.0)
    c.update("h1", 0.4, 0.0)  # both below the 0.9 target: Σ W_e = 0
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
