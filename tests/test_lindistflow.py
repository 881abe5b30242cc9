"""LinDistFlow extracted from the pandapower net reproduces the documented error against AC power flow."""

from __future__ import annotations

import numpy as np
import pytest

from dercosim.grids import ieee33
from dercosim.grids.lindistflow import LinDistFlow
from dercosim.grids.powerflow import PandapowerEngine


@pytest.fixture(scope="module")
def case():
    net = ieee33.make_net()
    p, q = ieee33.base_load_kw()
    return net, LinDistFlow.from_pandapower(net), p, q, PandapowerEngine(net).solve(p, q).vm_pu


@pytest.mark.parametrize("form,max_error", [("squared", 0.0028), ("magnitude", 0.0064)])
def test_error_against_ac_at_base_load(case, form, max_error):
    _, ldf, p, q, ac = case
    v = ldf.voltages_pu(p, q, form)
    error = v - ac
    assert np.abs(error).max() == pytest.approx(max_error, abs=1e-4)
    assert int(np.argmax(np.abs(error))) + 1 == 18
    assert error.min() >= 0.0  # not conservative for undervoltage: it overestimates everywhere


def test_tree_and_flows(case):
    net, ldf, p, q, _ = case
    assert ldf.root == 0 and ldf.parent[0] == -1
    assert ldf.parent[ieee33.bus_index(19)] == ieee33.bus_index(2)  # the lateral 19-22 leaves bus 2
    p_flow, q_flow = ldf.branch_flows_kw(p, q)
    assert p_flow[0] == pytest.approx(3715.0) and q_flow[0] == pytest.approx(2300.0)
    assert p_flow[ieee33.bus_index(18)] == pytest.approx(p[ieee33.bus_index(18)])  # a leaf carries its own load
    # impedances come from the case file: line 1-2 is 0.0922 + j0.047 ohm on 12.66 kV, 1 MVA
    assert ldf.r_pu[1] == pytest.approx(0.0922 / 12.66 ** 2)
    assert ldf.x_pu[1] == pytest.approx(0.047 / 12.66 ** 2)


def test_closing_a_tie_line_is_refused():
    net = ieee33.make_net()
    net.line.loc[net.line.index[~net.line.in_service][0], "in_service"] = True
    with pytest.raises(ValueError, match="loop"):
        LinDistFlow.from_pandapower(net)


def test_reverse_flow_raises_voltage(case):
    _, ldf, p, q, _ = case
    injected = p.copy()
    injected[ieee33.bus_index(18)] -= 1500.0  # 1.5 MW of PV at the far end
    assert ldf.voltages_pu(injected, q)[17] > ldf.voltages_pu(p, q)[17]
