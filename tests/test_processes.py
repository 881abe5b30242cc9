"""Simulators in another process or on another host: same numbers, a clear error when the host goes away."""

from __future__ import annotations

import json
import os
import socket
import time
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dercosim import cli
from dercosim.scenarios.load import load_scenario
from dercosim.scenarios.world import RunInterrupted, run_scenario, with_duration

BASE = cli.bundled_scenarios()["households_pv_battery"]
#: the simulators' own wall times: the only columns that may differ between placements
TIMING = ["step_ms"]
S4_TIMING = ["milp_solve_ms", "solve_ms", "step_ms"]
EVERY_KIND = "\n".join(f'{k} = "subprocess"' for k in ("grid", "households", "batteries", "controllers", "market",
                                                       "contract"))

DYING = '''
import json
import os


class Dying:
    """Follows the residual; in a host with DIE_AT set, the host process dies at that simulated time; with MARK
    set, it leaves that file at 5 simulated minutes (so a test knows the run is under way)."""
    period_s = 60
    inputs = ("net_kw",)
    outputs = ("p_set_kw", "follow_residual")

    def step(self, t, obs):
        if os.environ.get("DIE_AT") and t >= int(os.environ["DIE_AT"]):
            os._exit(3)
        if os.environ.get("MARK") and t == 300:
            open(os.environ["MARK"], "w").close()
        return {"p_set_kw": 0.0, "follow_residual": 1.0}
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scenario(tmp_path: Path, processes: str, text: str | None = None, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text((text or BASE.read_text()) + "\n[processes]\n" + processes + "\n")
    return with_duration(load_scenario(path), 1800)


def _serve(tmp_path: Path, port: int, env: dict | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    host = subprocess.Popen([sys.executable, "-m", "dercosim.cli", "serve", "controllers", "--addr",
                             f"127.0.0.1:{port}", "--timeout-s", "60", *extra], cwd=tmp_path, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    assert "waiting for a run to connect" in host.stderr.readline()  # printed once the port is bound
    return host


def test_controllers_in_a_subprocess_and_on_a_served_host_give_the_same_parquet(tmp_path: Path):
    inproc = run_scenario(_scenario(tmp_path, 'controllers = "inprocess"', name="a.toml"), tmp_path / "a",
                          progress=False)
    sub = run_scenario(_scenario(tmp_path, 'controllers = "subprocess"\ngrid = "subprocess"', name="b.toml"),
                       tmp_path / "b", progress=False)
    port = _free_port()
    host = _serve(tmp_path, port)
    try:
        served = run_scenario(_scenario(tmp_path, f'controllers = "connect:127.0.0.1:{port}"', name="c.toml"),
                              tmp_path / "c", progress=False)
        assert host.wait(timeout=30) == 0  # the host ends with the run
    finally:
        host.kill()
    a = pd.read_parquet(inproc.parquet).drop(columns=TIMING)
    for other in (sub, served):
        pd.testing.assert_frame_equal(pd.read_parquet(other.parquet).drop(columns=TIMING), a)
        assert other.summary["households"]["bill_total"] == inproc.summary["households"]["bill_total"]


def test_the_market_fleet_with_every_movable_simulator_in_its_own_process_gives_the_same_parquet(tmp_path: Path):
    """fleet_market_s4 (market, contract, MPC): six simulators in subprocesses, profiles sent as JSON lists."""
    s4 = cli.bundled_scenarios()["fleet_market_s4"].read_text()
    inproc = run_scenario(_scenario(tmp_path, 'grid = "inprocess"', text=s4, name="a.toml"), tmp_path / "a",
                          progress=False)
    moved = run_scenario(_scenario(tmp_path, EVERY_KIND, text=s4, name="b.toml"), tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(moved.parquet).drop(columns=S4_TIMING),
                                  pd.read_parquet(inproc.parquet).drop(columns=S4_TIMING))
    assert moved.summary["market"]["wholesale_revenue"] == inproc.summary["market"]["wholesale_revenue"]
    assert moved.summary["contract"]["contract_rounds"] == inproc.summary["contract"]["contract_rounds"] > 0


def test_a_served_host_that_dies_mid_run_gives_a_clear_error_and_keeps_the_record(tmp_path: Path):
    (tmp_path / "dying.py").write_text(DYING)
    port = _free_port()
    host = _serve(tmp_path, port, env={"DIE_AT": "900"})
    text = BASE.read_text().replace('controller = "rule_based"', 'controller = "dying.py:Dying"')
    scenario = _scenario(tmp_path, f'controllers = "connect:127.0.0.1:{port}"', text=text)
    try:
        with pytest.raises(RunInterrupted) as err:
            run_scenario(scenario, tmp_path / "run", progress=False)
    finally:
        host.kill()
    assert err.value.signal_name.startswith("connection lost")
    assert f"connect:127.0.0.1:{port}" in err.value.signal_name and "Controllers" in err.value.signal_name
    recorded = pd.read_parquet(tmp_path / "run" / "timeseries.parquet")
    assert recorded.time_s.max() == 840  # every minute before the host died is kept
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert "connection lost" in summary


def test_a_host_serving_its_own_controller_runs_it_and_refuses_another(tmp_path: Path):
    from dercosim.controllers.registry import ControllerError

    examples = Path(__file__).resolve().parents[1] / "examples"
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "my_controller.py").write_text((examples / "my_controller.py").read_text())
    (tmp_path / "my_controller.py").write_text((examples / "my_controller.py").read_text())
    mine = BASE.read_text().replace('controller = "rule_based"', 'controller = "my_controller.py:MyController"')
    for text, ok in ((mine, True), (BASE.read_text(), False)):
        port = _free_port()
        host = _serve(host_dir, port, extra=("--controller", "my_controller.py:MyController"))
        scenario = _scenario(tmp_path, f'controllers = "connect:127.0.0.1:{port}"', text=text, name=f"{ok}.toml")
        try:
            if ok:
                result = run_scenario(scenario, tmp_path / "ok", progress=False)
                assert result.summary["hems"]["faults"] == 0
            else:
                with pytest.raises(ControllerError, match="this host serves 'my_controller.py:MyController'"):
                    run_scenario(scenario, tmp_path / "refused", progress=False)
        finally:
            host.kill()


@pytest.mark.parametrize("line,key,words", [
    ('recorder = "subprocess"', "processes.recorder", ["unknown key"]),
    ('controllers = "connect:nohost"', "processes.controllers", ["pattern"]),
])
def test_placements_that_cannot_work_are_refused_before_anything_runs(tmp_path: Path, capsys, line, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(BASE.read_text() + "\n[processes]\n" + line + "\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {key}:" in err and all(w in err for w in words)
    assert not (tmp_path / "runs").exists()


def test_every_movable_simulator_has_a_processes_key():
    from dercosim.scenarios.config import ProcessesConfig
    from dercosim.sims import MOVABLE

    assert set(ProcessesConfig.model_fields) - {"start_timeout_s"} == {k.lower() for k in MOVABLE}


def test_a_reset_connection_fails_the_waiting_calls_as_a_closed_one_does():
    """A peer killed hard resets the connection; mosaik-api-v3's reader ended silently on that and the run (or the
    served host) waited forever. Hardened, the waiting call fails and the host's request loop ends."""
    import asyncio

    from mosaik_api_v3.connection import Channel, EndOfRequests

    from dercosim.sims.connection import harden_channels

    harden_channels()

    async def scenario() -> tuple[BaseException | None, object]:
        reader = asyncio.StreamReader()

        class Writer:
            def write(self, data: bytes) -> None:
                pass

            async def drain(self) -> None:
                pass

        channel = Channel(reader, Writer())  # type: ignore[arg-type]
        call = asyncio.ensure_future(channel.send(["step", [0, {}, 60], {}]))
        await asyncio.sleep(0)
        reader.set_exception(ConnectionResetError("reset by peer"))
        failed = None
        try:
            await asyncio.wait_for(call, 5.0)
        except BaseException as exc:  # noqa: BLE001 - which one is the point
            failed = exc
        end = await asyncio.wait_for(channel._incoming_requests.get(), 5.0)
        return failed, end

    failed, end = asyncio.run(scenario())
    assert isinstance(failed, asyncio.IncompleteReadError)
    assert isinstance(end, EndOfRequests)



def test_a_served_host_whose_run_is_killed_exits(tmp_path: Path):
    """kill -9 of the run: the host's connection is reset or closed, and it ends instead of waiting forever."""
    (tmp_path / "dying.py").write_text(DYING)
    mark = tmp_path / "mark"
    port = _free_port()
    host = _serve(tmp_path, port, env={"MARK": str(mark)})
    text = BASE.read_text().replace('controller = "rule_based"', 'controller = "dying.py:Dying"')
    path = tmp_path / "s.toml"
    path.write_text(text + f'\n[processes]\ncontrollers = "connect:127.0.0.1:{port}"\n')
    run = subprocess.Popen([sys.executable, "-m", "dercosim.cli", "run", str(path), "--out", str(tmp_path / "runs"),
                            "--quiet"], cwd=tmp_path, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while not mark.exists():  # wait for the event, not for a time
            assert run.poll() is None and host.poll() is None, "the run or the host ended before the mark"
            time.sleep(0.05)
        run.kill()
        run.wait()
        host.wait(timeout=600)  # a hang fails here, after a generous bound for a loaded machine
    finally:
        run.kill()
        host.kill()
    assert host.returncode is not None


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (read from /proc; zombies count as gone)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run_in_its_own_group(tmp_path: Path) -> tuple[subprocess.Popen, list[int], Path]:
    """A CLI run with four simulators in subprocesses, in a process group of its own (as a shell starts a job),
    once it is 5 simulated minutes in; and its simulator processes."""
    (tmp_path / "dying.py").write_text(DYING)
    mark = tmp_path / "mark"
    text = BASE.read_text().replace('controller = "rule_based"', 'controller = "dying.py:Dying"')
    path = tmp_path / "s.toml"
    path.write_text(text + "\n[processes]\n" + "\n".join(f'{k} = "subprocess"' for k in
                                                         ("grid", "households", "batteries", "controllers")) + "\n")
    run = subprocess.Popen([sys.executable, "-m", "dercosim.cli", "run", str(path), "--out", str(tmp_path / "runs"),
                            "--quiet"], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                           env={**os.environ, "MARK": str(mark)}, start_new_session=True)
    while not mark.exists():  # wait for the event, not for a time
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    sims = _children(run.pid)
    assert len(sims) == 4
    return run, sims, tmp_path / "runs"


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 600  # generous for a loaded machine: a hang fails here
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_to_the_whole_process_group_stops_the_run_cleanly_and_no_simulator_outlives_it(tmp_path: Path):
    """Ctrl-C in a terminal signals the run and the simulators it started: the run still stops cleanly (130, the
    record joined and summarised), not as a lost connection."""
    import signal

    run, sims, runs = _run_in_its_own_group(tmp_path)
    try:
        os.killpg(run.pid, signal.SIGINT)
        err = run.communicate(timeout=600)[1]
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert "stopped by SIGINT" in err and "Traceback" not in err
    (folder,) = runs.iterdir()
    assert json.loads((folder / "summary.json").read_text())["interrupted"]["signal"] == "SIGINT"
    assert pd.read_parquet(folder / "timeseries.parquet").time_s.max() >= 240  # every minute before the mark
    assert _gone(sims)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_of_the_run_leaves_no_simulator_process_behind(tmp_path: Path):
    run, sims, _ = _run_in_its_own_group(tmp_path)
    run.kill()
    run.wait()
    assert _gone(sims)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_of_one_simulator_process_stops_the_run_with_connection_lost(tmp_path: Path):
    import signal

    run, sims, runs = _run_in_its_own_group(tmp_path)
    try:
        os.kill(sims[0], signal.SIGKILL)
        err = run.communicate(timeout=600)[1]
    finally:
        run.kill()
    assert run.returncode == 1, err
    assert "connection lost" in err and "Traceback" not in err
    (folder,) = runs.iterdir()
    assert pd.read_parquet(folder / "timeseries.parquet").time_s.max() >= 240
    assert _gone(sims[1:])


def test_a_served_host_ignores_a_stray_connection_refuses_a_run_of_another_kind_and_serves_the_right_one(
        tmp_path: Path, capsys):
    port = _free_port()
    host = _serve(tmp_path, port)
    try:
        with socket.create_connection(("127.0.0.1", port)) as probe:  # a browser, a health check, a port scan
            probe.sendall(b"GET / HTTP/1.0\r\n\r\n")
            said = host.stderr.readline()
        assert "ignored a connection" in said and "does not speak mosaik's protocol" in said
        socket.create_connection(("127.0.0.1", port)).close()  # connects and goes
        assert "ignored a connection" in host.stderr.readline()
        wrong = tmp_path / "wrong.toml"
        wrong.write_text(BASE.read_text() + f'\n[processes]\ngrid = "connect:127.0.0.1:{port}"\n')
        assert cli.main(["run", str(wrong), "--until", "10min", "--out", str(tmp_path / "runs"), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "this host serves Controllers, the run asked it for Grid" in err and "dercosim bug" not in err
        assert "refused a run" in host.stderr.readline()
        right = _scenario(tmp_path, f'controllers = "connect:127.0.0.1:{port}"')
        result = run_scenario(right, tmp_path / "right", progress=False)
        assert result.summary["steps"] == 30
        assert host.wait(timeout=600) == 0  # the run it served has ended: so does the host
    finally:
        host.kill()
