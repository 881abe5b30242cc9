"""A bad scenario file stops before the world is built, naming the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from dercosim import cli
from dercosim.scenarios.config import ScenarioError, parse_duration_s
from dercosim.scenarios.load import load_scenario
GOOD = '''
name = "t"
[clock]
duration = "2h"
[[households.groups]]
buses = [2, 18]
'''

CASES = [
    # (text, key path, words the message must contain)
    ("colour = 'red'\n" + GOOD, "colour", ["unknown key", "expected one of", "households"]),
    (GOOD.replace('duration = "2h"', 'duration = "2h"\nstep = 60'), "clock.step", ["unknown key", "step_s"]),
    (GOOD.replace("[2, 18]", "[2, 18, 34]"), "households.groups[0].buses[2]", ["1..33", "got 34"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\npv_kwp = [-2, 5]"), "households.groups[0].pv_kwp[0]",
     ["greater than or equal to 0", "got -2"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\nper_bus = 'two'"), "households.groups[0].per_bus",
     ["integer", "got 'two'"]),
    (GOOD.replace('name = "t"', 'name = "t"\nseed = 1.5'), "seed", ["integer"]),
    (GOOD.replace('"2h"', '"2 weeks"'), "clock.duration", ["duration such as"]),
    (GOOD + "[grid]\nv_min_pu = 1.0\nv_max_pu = 1.0\n", "grid", ["v_min_pu (1.0) must be below v_max_pu"]),
    (GOOD + "[grid]\nv_min_pu = 1.2\n", "grid.v_min_pu", ["less than or equal to 1", "got 1.2"]),
    (GOOD + "[grid]\nengine = 'matpower'\n", "grid.engine", ["'fast'", "'pandapower'"]),
    (GOOD.replace('name = "t"\n', ""), "name", ["required key is missing"]),
    (GOOD + "[market]\nclearing = 'price_maker'\n", "market", ["needs residual_demand_slope > 0"]),
]


@pytest.mark.parametrize("text,key,words", CASES, ids=[c[1] + "-" + c[2][0][:12] for c in CASES])
def test_bad_value_names_file_key_and_expectation(tmp_path: Path, capsys, text, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out_dir = tmp_path / "runs"
    rc = cli.main(["run", str(path), "--out", str(out_dir), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert str(path) in err
    # one line per error, each naming the file and the key: "bad.toml: clock.duration: expected ..."
    line = next((ln for ln in err.splitlines() if f"{path}: {key}:" in ln), None)
    assert line is not None, f"no line for key {key!r} in:\n{err}"
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    assert not out_dir.exists()  # stopped before anything was built


def test_unreadable_toml(tmp_path: Path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('name = "t"\n[clock\nduration = 1\n')
    assert cli.main(["run", str(path), "--quiet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not valid TOML" in err and "line 2" in err and "Traceback" not in err


def test_missing_and_binary_files(tmp_path: Path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScenarioError, match="UTF-8"):
        load_scenario(binary)


def test_all_errors_reported_at_once(tmp_path: Path):
    path = tmp_path / "two.toml"
    path.write_text(GOOD.replace("[2, 18]", "[0, 40]"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "buses[0]" in str(info.value) and "buses[1]" in str(info.value)


def test_bad_until_flag(tmp_path: Path, capsys, default_scenario_path):
    assert cli.main(["run", str(default_scenario_path), "--until", "90s", "--quiet", "--out", str(tmp_path)]) == 2
    assert "--until" in capsys.readouterr().err


@pytest.mark.parametrize("text,seconds", [(3600, 3600), ("90min", 5400), ("6h", 21600), ("1d", 86400),
                                          ("30s", 30), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "-1h", "soon", "0", True, 1.5])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration_s(text)


def test_defaults_fill_in_and_all_means_buses_2_to_33(tmp_path: Path):
    path = tmp_path / "all.toml"
    path.write_text('name = "t"\n[[households.groups]]\nbuses = "all"\npv_kwp = 4\n')
    s = load_scenario(path)
    assert s.households.groups[0].buses == list(range(2, 34))
    assert s.households.groups[0].pv_kwp == (4.0, 4.0)
    assert s.grid.v_min_pu == 0.90 and s.grid.v_max_pu == 1.10 and s.grid.engine == "fast"
    assert s.n_steps == 1440
