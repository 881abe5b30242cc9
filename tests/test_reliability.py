"""Bad input gets one clear line and loses nothing; a kill at any instant leaves what was recorded readable."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import resource
import signal
import subprocess
import sys
import time
import tomllib
from datetime import date, datetime, time as dtime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

from dercosim.planning.admm import ADMMSettings
from dercosim import cli
from dercosim.scenarios.config import AdmmConfig, Scenario, ScenarioError, TariffConfig
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import run_scenario
from dercosim.timeseries.tariffs import Tariff, tariff_of

REPO = Path(__file__).resolve().parents[1]
BUNDLED = sorted((REPO / "scenarios").glob("*.toml")) + [REPO / "examples" / "my_controller.toml"]
DERCOSIM = str(Path(sys.executable).with_name("dercosim"))


def _one_clear_line_each(message: str, path: Path) -> None:
    """Every line of a scenario error names the file and says something after it."""
    lines = message.splitlines()
    assert lines, "empty error message"
    for line in lines:
        assert line.startswith(f"{path}: ") or line.startswith(f"{str(path)[:200]}"), line
        assert len(line) < 2000, line[:200]
        assert "Traceback" not in line


# ----------------------------------------------------------------- the fuzz test

POOL = [math.nan, math.inf, -math.inf, 1e308, -1e308, -1, 0, 1, 0.5, 10 ** 30, -10 ** 30, "10", "", "x" * 5000,
        True, False, [], {}, [1, 2, 3], [[[[1]]]], {"a": 1}, date(1600, 1, 1), datetime(2300, 1, 1),
        datetime(2016, 6, 21, 12, 0), dtime(7, 0), 7, -7.5, "all", "nan", "inf", "1e308", 86401, 1e-300]


def _leaves(data: object, path: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append(path + (k,))
            out.extend(_leaves(v, path + (k,)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.append(path + (i,))
            out.extend(_leaves(v, path + (i,)))
    return out


def _set(data: object, path: tuple, value: object) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def _delete(data: object, path: tuple) -> None:
    for part in path[:-1]:
        data = data[part]
    del data[path[-1]]


def _mutants(n: int, seed: int = 20261123) -> list[str]:
    rng = random.Random(seed)
    bases = [tomllib.loads(p.read_text()) for p in BUNDLED]
    texts = []
    for _ in range(n):
        data = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.choice([1, 1, 2, 3])):
            leaves = _leaves(data)
            target = rng.choice(leaves)
            action = rng.random()
            try:
                if action < 0.75:
                    _set(data, target, copy.deepcopy(rng.choice(POOL)))
                elif action < 0.9:
                    _delete(data, target)
                else:
                    parent = target[:-1]
                    holder = data
                    for part in parent:
                        holder = holder[part]
                    if isinstance(holder, dict):
                        holder[rng.choice(["colour", "step", "Name", "per bus"])] = rng.choice(POOL[:12])
            except (KeyError, IndexError, TypeError):
                continue
        try:
            texts.append(tomli_w.dumps(data))
        except (TypeError, ValueError):  # a mutation TOML cannot hold (e.g. a mixed array) is not a file a user has
            continue
    return texts


def _finite_everywhere(data: object) -> bool:
    if isinstance(data, float):
        return math.isfinite(data)
    if isinstance(data, dict):
        return all(_finite_everywhere(v) for k, v in data.items() if k != "params" or True)
    if isinstance(data, (list, tuple)):
        return all(_finite_everywhere(v) for v in data)
    return True


def test_seeded_mutations_of_every_bundled_scenario_load_or_give_one_clear_line_each(tmp_path: Path):
    texts = _mutants(300)
    assert len(texts) > 250
    accepted = rejected = 0
    for k, text in enumerate(texts):
        path = tmp_path / f"mutant_{k:03d}.toml"
        path.write_text(text, encoding="utf-8")
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            _one_clear_line_each(str(exc), path)
            rejected += 1
            continue
        # accepted: every number is finite and within what the schema promises, and it can be shown
        dumped = scenario.model_dump(mode="python")
        hems_params = dumped["hems"].pop("params")
        assert _finite_everywhere(dumped), text
        assert 0.5 <= scenario.grid.v_min_pu < scenario.grid.v_max_pu <= 1.5
        assert all(not isinstance(v, float) or not math.isnan(v) for v in hems_params.values())
        accepted += 1
    assert rejected > 100 and accepted > 20  # the mutations hit both sides


GOOD = '''name = "t"
[clock]
duration = "2h"
[[households.groups]]
buses = [2, 18]
'''

PLANNER = (REPO / "scenarios" / "value_stacking_tou.toml").read_text()
MPC = (REPO / "scenarios" / "households_mpc.toml").read_text()


def _with(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


SECTIONS = ("market", "contract", "processes", "hems")
#: values that make sense in these sections, beside the pool: placements, engines, controllers, intervals
SECTION_POOL = ["subprocess", "inprocess", "connect:127.0.0.1:0", "connect:nohost:5678", "evm", "python", "mpc",
                "rule_based", "nofile.py:X", "price_maker", "gb_n2ex", "absolute", 60, 300, 900, 1800, 3600, 7,
                0.001, 1e-3, 2.0, {"kind": "lognormal", "a": 0.5, "b": 0.5}, {"kind": "uniform", "a": 5, "b": 1}]


def _section_mutants(n: int, seed: int = 20261203) -> list[str]:
    """Mutations aimed at the market, contract, processes and HEMS sections of the fleet scenarios."""
    rng = random.Random(seed)
    bases = [tomllib.loads(p.read_text()) for p in BUNDLED if "fleet_market_s4" in p.name or "households_mpc" in p.name
             or "fleet_market_uncoordinated" in p.name]
    texts = []
    while len(texts) < n:
        data = copy.deepcopy(rng.choice(bases))
        data.setdefault("processes", {})
        for _ in range(rng.choice([1, 1, 2, 3])):
            section = rng.choice(SECTIONS)
            if section not in data:
                data[section] = {}
            leaves = [(section,) + leaf for leaf in _leaves(data[section])] or [(section, "x")]
            target = rng.choice(leaves + [(section, rng.choice(["interval_s", "engine", "window_s", "grid",
                                                                  "controller", "latency", "start_timeout_s",
                                                                  "applies_to", "residual_demand_slope"]))])
            try:
                if rng.random() < 0.85:
                    _set(data, target, copy.deepcopy(rng.choice(SECTION_POOL + POOL[:12])))
                else:
                    _delete(data, target)
            except (KeyError, IndexError, TypeError):
                continue
        try:
            texts.append(tomli_w.dumps(data))
        except (TypeError, ValueError):
            continue
    return texts


def test_mutations_of_the_market_contract_processes_and_hems_sections_give_one_clear_line(tmp_path: Path,
                                                                                         capsys):
    """500 mutated files: each shows or is refused with one clear line per problem; a sample of those that load
    runs for two minutes without a traceback (an error it reports is one line, never 'a dercosim bug')."""
    accepted = []
    for k, text in enumerate(_section_mutants(500)):
        path = tmp_path / f"section_{k:03d}.toml"
        path.write_text(text, encoding="utf-8")
        rc = cli.main(["show", str(path)])
        err = capsys.readouterr().err
        if rc == 0:
            accepted.append(path)
            continue
        assert rc == 2, err
        _one_clear_line_each(err.removeprefix("error: "), path)
    assert len(accepted) > 20
    for path in random.Random(5).sample(accepted, 4):
        rc = cli.main(["run", str(path), "--until", "2min", "--out", str(tmp_path / "runs"), "--quiet"])
        err = capsys.readouterr().err
        assert rc in (0, 1, 2), err
        assert "bug" not in err and "Traceback" not in err, err


# (scenario text, key path the message must name, words it must contain): the cases the fuzzing of
# the reliability issue found with a traceback, a hang, or accepted although absurd
CASES = [
    (GOOD.replace('duration = "2h"', 'duration = "2h"\nstart = 1600-01-01T00:00:00'), "clock.start", ["1900"]),
    (GOOD.replace('duration = "2h"', 'duration = "2h"\nstart = "10"'), "clock.start", ["date-time"]),
    (GOOD.replace('"2h"', '"99999999999999999999999h"'), "clock.duration", ["duration"]),
    (GOOD.replace('"2h"', '"400d"'), "clock.duration", ["one year"]),
    (GOOD.replace('name = "t"', 'name = "' + "n" * 100_000 + '"'), "name", ["at most 100 characters"]),
    (GOOD + "[tariff]\ntou = [{start = 7, end = 9, import_per_kwh = 0.3}]\n", "tariff.tou[0].start",
     ["local time"]),
    (GOOD + "[tariff]\ntou = [{start = '07:00+01:00', end = 09:00:00, import_per_kwh = 0.3}]\n",
     "tariff.tou[0].start", ["without a UTC offset"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\nper_bus = 1000000000"), "households.groups[0].per_bus",
     ["less than or equal to 20000"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\nper_bus = 20000"), "households.groups",
     ["40000 households", "at most 20000"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\naggregate = 1000000000000"),
     "households.groups[0].aggregate", ["less than or equal to"]),
    (GOOD + "[[batteries.groups]]\ncapacity_kwh = 1e308\n", "batteries.groups[0].capacity_kwh",
     ["less than or equal to 100000"]),
    (GOOD + "[grid]\nv_max_pu = 1e308\n", "grid.v_max_pu", ["less than or equal to 1.5"]),
    (GOOD + "[grid.base_load]\nscale = 1e308\n", "grid.base_load.scale", ["less than or equal to 10"]),
    (GOOD + "[batteries]\nsubminute_sigma_kw = inf\n", "batteries.subminute_sigma_kw", ["finite"]),
    (GOOD + "[tariff]\nimport_per_kwh = inf\n", "tariff.import_per_kwh", ["finite"]),
    (GOOD + "[tariff]\nimport_per_kwh = '0.15'\n", "tariff.import_per_kwh", ["valid number", "got '0.15'"]),
    (GOOD + "[tariff]\nimport_per_kwh = true\n", "tariff.import_per_kwh", ["valid number"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\nt_set_c = nan"), "households.groups[0].t_set_c",
     ["finite"]),
    (GOOD.replace("buses = [2, 18]", "buses = [2, 18]\nt_set_c = 86401"), "households.groups[0].t_set_c",
     ["less than or equal to 35"]),
    (_with(PLANNER, 'kind = "lognormal", a = 0.2', 'kind = "lognormal", a = inf'), "planner.admm.latency.a",
     ["finite"]),
    (_with(PLANNER, "start = 2018-01-16T00:00:00", "start = 2018-06-16T00:00:00"), "planner.b2g_market",
     ["covers 2017-12-31", "asked for 2018-06-15"]),
    (_with(MPC, "period_s = 120", "period_s = -1"), "hems.params.period_s", ["greater than or equal to 60"]),
    (_with(MPC, "period_s = 120", "period_s = nan"), "hems.params.period_s", ["valid integer"]),
    (_with(MPC, "market_interval_s = 1800", "market_interval_s = 0"), "hems.params.market_interval_s",
     ["greater than or equal to 300"]),
    (_with(MPC, "market_interval_s = 1800", "market_interval_s = 1700"), "hems.params.market_interval_s",
     ["multiple of 60"]),
    (_with(MPC, 'controller = "mpc"', 'controller = "mcp"'), "hems.controller", ["no controller registered", "mpc"]),
    (_with(MPC, "[hems.params]", "[hems.params]\ncolour = 'red'"), "hems.params.colour", ["unknown parameter"]),
    ("name = 't'\nx = " + "[" * 5000 + "]" * 5000 + "\n", None, ["nested too deeply"]),
]


@pytest.mark.parametrize("text,key,words", CASES, ids=[f"{i:02d}-{c[1]}" for i, c in enumerate(CASES)])
def test_each_fuzz_finding_is_one_clear_line_before_anything_is_written(tmp_path: Path, capsys, text, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "runs"
    rc = cli.main(["run", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith(f"error: {path}: ") or line.startswith(f"{path}: ") for line in lines), err
    line = next((ln for ln in lines if key is None or f"{path}: {key}:" in ln), None)
    assert line is not None, err
    for word in words:
        assert word in line, line
    assert not out.exists()  # nothing was written (and the former hangs, 1e308 kWh or inf latency, now stop here)


def test_a_byte_order_mark_is_not_part_of_the_scenario(tmp_path: Path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_scenario(path).name == "t"


def test_a_file_name_too_long_for_the_file_system_is_a_clear_error(capsys):
    rc = cli.main(["show", "x" * 5000 + ".toml"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "too long" in err.lower()


@pytest.mark.parametrize("until", ["9" * 40 + "s", "1e400", "400d"])
def test_an_overflowing_until_is_a_clear_error(tmp_path: Path, capsys, until):
    rc = cli.main(["run", str(REPO / "scenarios" / "ieee33_households.toml"), "--until", until,
                   "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --until:") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_a_clear_error(tmp_path: Path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    for out in (tmp_path / "afile", tmp_path / "afile" / "below"):
        rc = cli.main(["run", str(REPO / "scenarios" / "ieee33_households.toml"), "--until", "1h", "--out",
                       str(out), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: --out:") and "Traceback" not in err, err


# ----------------------------------------------------------------- results are never lost or mixed

def test_two_runs_in_the_same_second_never_share_a_folder(tmp_path: Path):
    when = datetime(2026, 11, 23, 1, 2, 3)
    first = cli.make_run_dir(tmp_path, "same", when)
    second = cli.make_run_dir(tmp_path, "same", when)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "same-20261123-010203-2"
    scenario = Scenario.model_validate({"name": "x", "clock": {"duration": "10min"}})
    (first / "timeseries.parquet").write_bytes(b"someone else's results")
    with pytest.raises(ScenarioError, match="already holds files"):
        run_scenario(scenario, first, progress=False)


def test_two_simultaneous_cli_runs_get_two_folders_and_their_own_seeds(tmp_path: Path):
    for seed in (1, 2):
        (tmp_path / f"s{seed}.toml").write_text(GOOD.replace('name = "t"', f'name = "same"\nseed = {seed}')
                                                .replace('"2h"', '"20min"'))
    procs = [subprocess.Popen([DERCOSIM, "run", f"s{seed}.toml", "--out", "runs", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    seeds = sorted(json.loads((r / "summary.json").read_text())["seed"] for r in runs)
    assert seeds == [1, 2]
    for r in runs:  # each summary describes its own parquet
        s = json.loads((r / "summary.json").read_text())
        df = pd.read_parquet(r / "timeseries.parquet")
        hh = df[df.kind == "household"]
        assert s["households"]["load_kwh"] == pytest.approx(hh.load_kw.sum() / 60.0, rel=1e-9)


WRITER = r'''
import sys, numpy as np, pyarrow as pa
from pathlib import Path
from dercosim.sims.recorder import write_atomically
parts = Path(sys.argv[1])
parts.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
k = 0
print("ready", flush=True)
while True:
    n = 200_000
    table = pa.table({"time_s": np.full(n, k, np.int64), "x": rng.random(n), "y": rng.random(n)})
    write_atomically(table, parts / f"part-{k:05d}.parquet")
    k += 1
'''


def test_kill_9_while_writing_parts_leaves_every_part_readable(tmp_path: Path):
    """SIGKILL at 10 random instants of a writer of 5-MB parts: the folder always reads, parts are whole."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(11)
    parts = tmp_path / "t.parquet.parts"
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, str(script), str(parts)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.wait()
        files = sorted(parts.glob("part-*.parquet"))
        if not files:
            continue
        df = pd.read_parquet(parts)  # the documented recovery read
        assert len(df) == 200_000 * len(files)
        assert sorted(df.time_s.unique()) == list(range(len(files)))
    # and once after the first part exists (waited for, not timed: a loaded machine may write none in 0.4 s)
    proc = subprocess.Popen([sys.executable, str(script), str(parts)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    while not any(parts.glob("part-*.parquet")) and proc.poll() is None:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    files = sorted(parts.glob("part-*.parquet"))
    assert files and len(pd.read_parquet(parts)) == 200_000 * len(files)


def _popen_run(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([DERCOSIM, "run", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _wait_for_parts(parts: Path, n: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if parts.is_dir() and len(list(parts.glob("part-*.parquet"))) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("no parts appeared")


SLOW_DAY = GOOD.replace('"2h"', '"1d"').replace('name = "t"', 'name = "slow"') + \
    "[recorder]\nflush_every_s = 60\n[batteries]\npms_cycle_s = 0.1\n[[batteries.groups]]\n" \
    "[hems]\ncontroller = 'rule_based'\n"


@pytest.mark.parametrize("sig,code", [(signal.SIGKILL, -9), (signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_run_stopped_mid_way_keeps_what_it_recorded(tmp_path: Path, sig, code):
    (tmp_path / "slow.toml").write_text(SLOW_DAY)
    proc = _popen_run(["slow.toml", "--out", "runs", "--quiet"], tmp_path)
    parts_glob = lambda: list((tmp_path / "runs").glob("*/timeseries.parquet.parts"))  # noqa: E731
    deadline = time.time() + 120
    while not parts_glob() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    (parts,) = parts_glob()
    _wait_for_parts(parts, 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    run_dir = parts.parent
    if sig == signal.SIGKILL:  # no chance to clean up: the parts are the record
        df = pd.read_parquet(parts)
    else:  # stopped cleanly: joined, summarised, and said so
        assert "Traceback" not in err and f"stopped by {sig.name}" in err and run_dir.name in err
        assert not parts.exists()
        df = pd.read_parquet(run_dir / "timeseries.parquet")
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["interrupted"]["signal"] == sig.name
        assert s["interrupted"]["steps_recorded"] == df.time_s.nunique() < 1440
    assert df.time_s.nunique() >= 3 and (df.kind == "battery").any()


def test_a_full_disk_is_a_clear_error_and_the_parts_stay_readable(tmp_path: Path):
    """Files may not grow beyond 150 kB (RLIMIT_FSIZE): the hourly parts fit, the joined file does not."""
    (tmp_path / "day.toml").write_text(GOOD.replace('"2h"', '"4h"'))

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    proc = _popen_run(["day.toml", "--out", "runs", "--quiet"], tmp_path, preexec_fn=limit)
    _, err = proc.communicate(timeout=300)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: writing the results failed:"), err
    assert "File too large" in lines[0] and run_dir.name in lines[0]
    assert not (run_dir / "timeseries.parquet").exists()  # never a truncated file under the real name
    df = pd.read_parquet(run_dir / "timeseries.parquet.parts")
    assert df.time_s.nunique() == 4 * 60


# ----------------------------------------------------------------- controllers that misbehave

PLUGINS = '''
import math, sys, time

class _Base:
    period_s = 60
    inputs = ("net_kw",)
    outputs = ("p_set_kw", "follow_residual")

class ReturnsNaN(_Base):
    def step(self, t, obs):
        if 3600 <= t < 3600 + 5 * 60:
            return {"p_set_kw": math.nan, "follow_residual": 0.0}
        return {"p_set_kw": -2.0, "follow_residual": 0.0}

class HalfFollows(_Base):
    def step(self, t, obs):
        return {"p_set_kw": 0.0, "follow_residual": 0.5}

class ReturnsHuge(_Base):
    def step(self, t, obs):
        return {"p_set_kw": 1e308 if t >= 600 else -1.0, "follow_residual": 0.0}

class ReturnsNothing(_Base):
    def step(self, t, obs):
        return {} if t >= 1200 else {"p_set_kw": -1.0, "follow_residual": 0.0}

class Holds(_Base):
    """Asks its battery for 2 kW of charge, whatever happens."""
    def step(self, t, obs):
        return {"p_set_kw": 2.0, "follow_residual": 0.0}

class Exits(_Base):
    def step(self, t, obs):
        if t >= 1800:
            sys.exit(0)
        return {"p_set_kw": 0.0, "follow_residual": 1.0}

class Batched(_Base):
    """Stepped by the host in one call per minute (``step_many``); the first household's answer fails for
    five minutes from 01:00, and the whole call fails at 01:30."""
    diagnostics = ("batch_size",)

    def step(self, t, obs):
        return {"p_set_kw": -0.5 * obs["net_kw"], "follow_residual": 0.0}

    @classmethod
    def step_many(cls, calls, t, threads):
        if t == 5400:
            raise RuntimeError("the batch solver is down")
        answers = [{**c.step(t, obs), "batch_size": len(calls)} for c, obs in calls]
        if 3600 <= t < 3600 + 5 * 60:
            answers[0] = ValueError("no forecast")
        return answers

class Slow(_Base):
    def step(self, t, obs):
        if t == 600:
            time.sleep(1.0)
        return {"p_set_kw": 0.0, "follow_residual": 1.0}
'''


def _plugin_scenario(tmp_path: Path, controller: str, **hems: object) -> Path:
    (tmp_path / "plugins.py").write_text(PLUGINS)
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in hems.items())
    (tmp_path / "s.toml").write_text(f'''name = "plug"
[clock]
duration = "2h"
[[households.groups]]
buses = [5, 9]
pv_share = 1.0
[[batteries.groups]]
[hems]
controller = "plugins.py:{controller}"
{extra}''')
    return tmp_path / "s.toml"


@pytest.mark.parametrize("controller,words", [
    ("ReturnsNaN", ["at t = 3600 s", "p_set_kw = nan", "finite"]),
    ("HalfFollows", ["at t = 0 s", "follow_residual = 0.5", "expected 0 or 1"]),
    ("ReturnsHuge", ["at t = 600 s", "p_set_kw = 1e+308", "kW"]),
    ("ReturnsNothing", ["at t = 1200 s", "no setpoint", "p_set_kw"]),
    ("Exits", ["at t = 1800 s", "raised SystemExit"]),
])
def test_a_faulty_controller_stops_the_run_by_name_by_default(tmp_path: Path, capsys, controller, words):
    path = _plugin_scenario(tmp_path, controller)
    rc = cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"controller 'plugins.py:{controller}' for hh_001" in err
    for word in words:
        assert word in err, err


def test_with_fallback_a_non_finite_setpoint_is_counted_per_household_and_the_battery_follows(tmp_path: Path):
    path = _plugin_scenario(tmp_path, "ReturnsNaN", on_fault="fallback")
    result = run_scenario(load_scenario(path), tmp_path / "run", progress=False)
    hems = result.summary["hems"]
    assert hems["faults"] == 2 * 5  # two households, five minutes each
    assert {h: v["faults"] for h, v in hems["per_household"].items()} == {"hh_001": 5, "hh_002": 5}
    bat = pd.read_parquet(result.parquet, filters=[("kind", "==", "battery")]).set_index("time_s")
    faulted = bat.loc[3600:3600 + 4 * 60]
    assert (faulted.follow_residual == 1).all()  # the documented fallback: follow the residual
    assert (bat.loc[[3540, 3600 + 5 * 60]].follow_residual == 0).all()  # and back to the controller after


def test_a_batched_controller_is_stepped_once_per_minute_and_faults_per_household(tmp_path: Path, capsys):
    path = _plugin_scenario(tmp_path, "Batched", on_fault="fallback")
    result = run_scenario(load_scenario(path), tmp_path / "run", progress=False)
    hems = result.summary["hems"]
    # hh_001: its own answer failed 5 times; both: the whole call failed once
    assert {h: v["faults"] for h, v in hems["per_household"].items()} == {"hh_001": 6, "hh_002": 1}
    ctrl = pd.read_parquet(result.parquet, filters=[("kind", "==", "controller")])
    ok = ctrl[ctrl.fault == 0]
    assert (ok.batch_size == 2).all() and len(ok) == 2 * 120 - 7
    bat = pd.read_parquet(result.parquet, filters=[("kind", "==", "battery")])
    faulted = bat[bat.entity.str.contains("001") & bat.time_s.between(3600, 3600 + 4 * 60)]
    assert len(faulted) == 5 and (faulted.follow_residual == 1).all()  # the fallback: follow the residual
    path = _plugin_scenario(tmp_path, "Batched")  # on_fault = "stop": named like a single step's fault
    assert cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "controller 'plugins.py:Batched' for hh_001 at t = 3600 s raised ValueError: no forecast" in err


def test_an_overrun_is_reported_by_name_and_counted(tmp_path: Path, capsys):
    path = _plugin_scenario(tmp_path, "Slow", step_timeout_s=0.5)
    rc = cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    warning = [ln for ln in captured.err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 2  # once per household, by name
    for line, household in zip(warning, ("hh_001", "hh_002")):
        assert f"controller 'plugins.py:Slow' for {household} at t = 600 s took" in line
        assert "hems.step_timeout_s = 0.5 s" in line
    (run_dir,) = (tmp_path / "runs").iterdir()
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["hems"]["overruns"] == 2 and s["hems"]["per_household"]["hh_002"]["overruns"] == 1


def test_a_file_controller_is_copied_into_the_run_folder_which_reruns(tmp_path: Path):
    path = _plugin_scenario(tmp_path, "Slow")
    result = run_scenario(load_scenario(path), tmp_path / "run", progress=False)
    copy_ = result.out_dir / "plugins.py"
    assert copy_.read_text() == PLUGINS
    (tmp_path / "plugins.py").unlink()  # the user's folder is gone; the run folder is enough
    again = load_scenario(result.out_dir / "scenario.toml")
    assert again.hems.controller == "plugins.py:Slow" and again.source_dir == result.out_dir.resolve()


# ----------------------------------------------------------------- bills that match the tariff

def test_the_bill_includes_each_days_peak_demand_charge():
    times = pd.date_range("2018-01-16", periods=2 * 1440, freq="min", tz="Australia/Brisbane")
    meter = np.zeros((len(times), 2))
    meter[:, 0] = 1.0  # 1 kW all the time
    meter[600:630, 1] = 6.0  # 6 kW for 30 minutes on day 1: hourly-mean demand 3 kW
    meter[1440 + 60:1440 + 120, 1] = 2.0  # 2 kW for a whole hour on day 2: demand 2 kW
    meter[2000:2010, 1] = -50.0  # exports do not lower a peak or count as demand
    flat = Tariff(import_per_kwh=0.2, export_per_kwh=0.0)
    two_part = dataclasses.replace(flat, peak_demand_per_kw=0.4)
    np.testing.assert_allclose(two_part.peak_demand_kw(times, meter), [[1.0, 3.0], [1.0, 2.0]])
    np.testing.assert_allclose(two_part.bill(times, meter, 1 / 60) - flat.bill(times, meter, 1 / 60),
                               [0.4 * (1 + 1), 0.4 * (3 + 2)])
    np.testing.assert_allclose(flat.bill(times, meter, 1 / 60), [0.2 * 48, 0.2 * (3 + 2)])


def test_every_tariff_and_admm_key_of_a_scenario_reaches_its_domain_type():
    tpt = load_scenario(REPO / "scenarios" / "value_stacking_tpt.toml")
    tariff = tariff_of(tpt)
    assert tariff.peak_demand_per_kw == tpt.tariff.peak_demand_per_kw == 0.40
    domain = {f.name for f in dataclasses.fields(Tariff)}
    assert set(TariffConfig.model_fields) <= domain  # a new [tariff] key cannot be dropped on the way
    for key in TariffConfig.model_fields:
        if key not in ("tou", "agile"):
            assert getattr(tariff, key) == getattr(tpt.tariff, key), key
    agile = tariff_of(load_scenario(REPO / "scenarios" / "fleet_market_s1.toml"))
    assert agile.kind == "agile_octopus" and dataclasses.asdict(agile.agile) == {
        "market": "gb_n2ex", "multiplier": 2.2, "peak_adder_per_kwh": 0.12, "cap_per_kwh": 0.35, "vat": 0.05}
    assert set(AdmmConfig.model_fields) | {"seed"} == {f.name for f in dataclasses.fields(ADMMSettings)}


def test_what_the_controller_asked_is_recorded_beside_what_the_battery_did(tmp_path: Path):
    result = run_scenario(load_scenario(_plugin_scenario(tmp_path, "Holds")), tmp_path / "run", progress=False)
    bat = pd.read_parquet(result.parquet, filters=[("kind", "==", "battery")])
    assert (bat["p_set_kw"] == 2.0).all()  # asked every minute
    # what the battery did: the setpoint until the battery is full, then nothing more (never above the ask)
    assert (bat["p_kw"] <= 2.0 + 1e-12).all() and (bat["p_kw"] > 1.99).any()
