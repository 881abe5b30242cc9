"""Any feeder: pandapower's networks, SimBench codes and a user's JSON file, prepared alike; both power-flow engines
on each (transformers, switches, several external grids); buses named in scenarios; LinDistFlow with
transformers; a SimBench LV feeder with 118 households run end to end and validated against AC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pandapower as pp
import pandapower.networks as pn
import pytest

from dercosim.analysis.validate import ValidationError, model_voltages, validate
from dercosim.grids import ieee33
from dercosim.grids.feeders import FeederError, load_feeder
from dercosim.grids.lindistflow import LinDistFlow
from dercosim.grids.powerflow import IslandsEngine, make_engine
from dercosim.scenarios.bundled import bundled_scenarios
from dercosim.scenarios.config import ScenarioError
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario

GOOD = bundled_scenarios()["ieee33_households"].read_text()


def _solve_both(spec: str) -> tuple:
    f = load_feeder(spec)
    return f, [make_engine(name, f.make_net()).solve(f.base_p_kw, f.base_q_kvar) for name in ("pandapower", "fast")]


@pytest.mark.parametrize("spec", ["create_cigre_network_lv", "create_kerber_dorfnetz", "1-LV-rural1--0-sw",
                                  "mv_oberrhein"])
def test_both_engines_agree_on_any_feeder(spec: str) -> None:
    """Transformers (Dyn5: a 150° shift), switches, two external grids: the fast engine equals runpp within 1e-8 pu,
    and the power balance closes: head = loads + losses."""
    f, (ref, fast) = _solve_both(spec)
    assert ref.converged and fast.converged
    assert np.max(np.abs(ref.vm_pu - fast.vm_pu)) < 1e-8
    assert fast.losses_kw == pytest.approx(ref.losses_kw, rel=1e-6)
    assert fast.p_head_kw == pytest.approx(f.base_p_kw.sum() + fast.losses_kw, rel=1e-6)
    assert len(f.net.load) == f.n_bus and (f.net.load.index == np.arange(f.n_bus)).all()


def test_a_net_with_several_external_grids_is_solved_part_by_part() -> None:
    f = load_feeder("mv_oberrhein")
    assert len(f.slack_numbers) == 2
    assert isinstance(make_engine("fast", f.make_net()), IslandsEngine)


def test_ieee33_is_the_papers_case_unchanged() -> None:
    f = load_feeder("ieee33")
    p, q = ieee33.base_load_kw()
    assert f.names == tuple(str(b) for b in range(1, 34)) and f.slack_numbers == (1,)
    np.testing.assert_array_equal(f.base_p_kw, p)
    np.testing.assert_array_equal(f.base_q_kvar, q)
    assert f.load_numbers == list(range(2, 34))
    assert [p[0] for p in f.paths()] == [1, 2, 3, 6]  # the main feeder, then the laterals at 2, 3 and 6
    assert sorted(b for p in f.paths() for b in p[1:]) == list(range(2, 34))  # each bus on exactly one path


def test_a_users_json_file_and_its_errors(tmp_path: Path) -> None:
    net = pn.create_cigre_network_mv()
    pp.to_json(net, str(tmp_path / "mine.json"))
    f = load_feeder("mine.json", tmp_path)
    assert f.n_bus == len(net.bus) and f.names[0] == str(net.bus.name.iloc[0])
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(FeederError, match="not a pandapower network"):
        load_feeder("junk.json", tmp_path)
    no_slack = pn.create_cigre_network_lv()
    no_slack.ext_grid.drop(no_slack.ext_grid.index, inplace=True)
    pp.to_json(no_slack, str(tmp_path / "no_slack.json"))
    with pytest.raises(FeederError, match="no external grid"):
        load_feeder("no_slack.json", tmp_path)
    island = pn.create_cigre_network_lv()
    pp.create_bus(island, vn_kv=0.4, name="lost")
    pp.to_json(island, str(tmp_path / "island.json"))
    with pytest.raises(FeederError, match="not reachable from an external grid.*'lost'"):
        load_feeder("island.json", tmp_path)


def test_a_wrong_feeder_name_lists_what_exists(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('feeder = "ieee33"', 'feeder = "ieee34"'))
    with pytest.raises(ScenarioError, match="unknown feeder 'ieee34'.*create_cigre_network_lv.*SimBench code"):
        load_scenario(path)
    path.write_text(GOOD.replace('feeder = "ieee33"', 'feeder = "1-LV-nowhere--0-sw"'))
    with pytest.raises(ScenarioError, match="not a SimBench code; e.g."):
        load_scenario(path)


def test_buses_by_name_and_all_on_a_simbench_feeder(tmp_path: Path) -> None:
    f = load_feeder("1-LV-rural1--0-sw")
    named = [f.name_of(b) for b in f.load_numbers[:2]]
    base = bundled_scenarios()["simbench_lv_households"].read_text().replace("1-LV-rural3--0-sw", "1-LV-rural1--0-sw")
    path = tmp_path / "named.toml"
    path.write_text(base.replace('buses = "all"', f"buses = {json.dumps(named)}"))
    assert load_scenario(path).households.groups[0].buses == f.load_numbers[:2]
    path.write_text(base)
    assert load_scenario(path).households.groups[0].buses == f.load_numbers
    path.write_text(base.replace('buses = "all"', 'buses = "0.4kV"'))  # a voltage level: its load buses
    assert load_scenario(path).households.groups[0].buses == [b for b in f.load_numbers if f.vn_kv[b - 1] == 0.4]
    path.write_text(base.replace('buses = "all"', 'buses = "11kV"'))
    with pytest.raises(ScenarioError, match=r"no load bus at 11 kV \(its levels: 0.4 kV, 20 kV\)"):
        load_scenario(path)
    path.write_text(base.replace('buses = "all"', 'buses = ["LV1.101 Bus 4", "no such bus", 99]'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    assert "households.groups[0].buses[1]: SimBench 1-LV-rural1--0-sw has no bus named 'no such bus'" in text
    assert "households.groups[0].buses[2]: expected a bus of SimBench 1-LV-rural1--0-sw, 1..15" in text


def test_lindistflow_with_a_transformer_and_refused_on_a_meshed_feeder() -> None:
    f, (ac, _) = _solve_both("1-LV-semiurb4--0-sw")
    ldf = LinDistFlow.from_pandapower(f.make_net())
    err = ldf.voltages_pu(f.base_p_kw, f.base_q_kvar) - ac.vm_pu
    assert np.max(np.abs(err)) < 0.005  # the LV feeder behind its 20/0.4 kV transformer
    meshed = load_feeder("1-MV-rural--0-sw")
    assert not meshed.radial and meshed.paths() == []
    p = np.tile(meshed.base_p_kw, (2, 1))
    with pytest.raises(ValidationError, match="needs a radial feeder.*the AC run itself is unaffected"):
        model_voltages("lindistflow_squared", p, p * 0.3, Path("."), meshed)
    # a meshed feeder's voltage profile: every bus by its electrical distance from the slack
    from dercosim.analysis.validate import branch_profiles, electrical_distance

    d = electrical_distance(meshed)
    slack = meshed.slack_numbers[0] - 1
    assert d[slack] == 0 and np.isfinite(d).all() and (np.delete(d, slack) > 0).all()
    fig = branch_profiles({"AC": np.ones(meshed.n_bus)}, (0.9, 1.1), "meshed", meshed)
    assert fig.axes[0].get_xlabel().startswith("electrical distance")
    d33 = electrical_distance(load_feeder("ieee33"))
    assert 0 == d33[0] < d33[1] < d33[17]  # along the main feeder, bus 18 furthest


@pytest.fixture(scope="module")
def simbench_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("simbench") / "run"
    scenario = load_scenario(bundled_scenarios()["simbench_lv_households"])
    from dercosim.scenarios.world import with_duration

    return run_scenario(with_duration(scenario, 3 * 3600 + 1800), out, progress=False)


def test_the_simbench_feeder_runs_with_households_in_place_of_its_loads(simbench_run) -> None:
    s = simbench_run.summary
    assert s["households"]["count"] == 118 and s["powerflow"]["failures"] == 0
    assert s["feeder"]["buses"] == 129 and s["feeder"]["radial"]
    buses = pd.read_csv(simbench_run.out_dir / "buses.csv")
    assert len(buses) == 129 and buses.slack.sum() == 1
    assert s["voltage"]["min_bus_name"] == buses.set_index("bus").loc[s["voltage"]["min_bus"], "name"]
    by_name = simbench_run.wide("bus", "vm_pu", names=True)
    assert by_name.shape[1] == 129 and by_name.columns[0] == buses.name.iloc[0]
    feeder = simbench_run.feeder
    assert (feeder.base_p_kw == 0).all()  # every case load replaced by a household: none counted twice
    bus = simbench_run.buses
    total = bus.groupby("time_s").p_net_kw.sum()
    balance = feeder.set_index("time_s").p_head_kw - (total + feeder.set_index("time_s").losses_kw)
    assert balance.abs().max() < 1e-3  # head = loads + losses (line and transformer), within 1 W
    assert feeder.line_loading_max_pct.notna().all()  # the case's own line ratings
    lines = simbench_run.lines  # per line and step, with its from-bus
    n_lines = int(load_feeder("1-LV-rural3--0-sw").net.line.in_service.sum())
    assert lines.entity.nunique() == n_lines and len(lines) == n_lines * len(feeder)
    worst = lines.groupby("time_s").loading_pct.max()
    np.testing.assert_allclose(worst.to_numpy(), feeder.set_index("time_s").line_loading_max_pct.to_numpy())


def test_validate_on_the_simbench_run(simbench_run, tmp_path: Path) -> None:
    r = validate(simbench_run.out_dir, engine_minutes=5)
    assert r["engine_check"]["agrees"]
    for name in ("lindistflow_squared", "lindistflow_magnitude"):
        assert r["models"][name]["max_abs_error_pu"] < 0.01
    # a user's model may answer by bus name
    (tmp_path / "flat.py").write_text(
        "class Flat:\n"
        "    def __init__(self, bus_names):\n"
        "        self.names = bus_names\n"
        "    def voltages(self, p_kw, q_kvar):\n"
        "        return {n: 1.0 for n in self.names}\n")
    f = load_feeder("1-LV-rural3--0-sw")
    v = model_voltages(str(tmp_path / "flat.py") + ":Flat", np.zeros((2, f.n_bus)), np.zeros((2, f.n_bus)),
                       tmp_path, f)
    assert v.shape == (2, 129) and (v == 1.0).all()
