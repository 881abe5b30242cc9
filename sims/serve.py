"""Run one of dercosim's simulators in its own process: started by mosaik, or served for a run to connect to.

    python -m dercosim.sims.serve KIND HOST:PORT             # mosaik's "cmd": connect back to mosaik at HOST:PORT
    python -m dercosim.sims.serve KIND HOST:PORT --server    # mosaik's "connect": wait for a run at HOST:PORT

KIND is ``Grid``, ``Households``, ``Batteries``, ``Controllers``, ``Market``
or ``Contract`` (see the scenario's ``[processes]`` table; the recorder and
the planner stay in the run's process). ``dercosim
serve`` is the user-facing form of the second line. The protocol is mosaik's
own (JSON over TCP), so the host may be another Python or another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Callable

from dercosim.sims import MOVABLE, SIMULATORS


def make_simulator(kind: str, controller: str | None = None):  # noqa: ANN201 - a mosaik_api_v3.Simulator
    import importlib

    if kind not in MOVABLE:
        raise ValueError(f"cannot serve {kind!r}; servable: {', '.join(MOVABLE)}")
    module, cls = SIMULATORS[kind].split(":")
    sim = getattr(importlib.import_module(module), cls)()
    if controller is not None:
        if kind != "Controllers":
            raise ValueError("--controller is for a Controllers host")
        sim.served_controller = controller
    return sim


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:5678), got {addr!r}")
    return host, int(port)


async def _serve_once(sim: Any, host: str, port: int, timeout_s: float, ready: Callable[[], None]) -> None:
    """mosaik_api_v3's ``run_as_server``, saying when the port is bound (so a caller knows it may connect)."""
    import mosaik_api_v3
    from mosaik_api_v3.connection import Channel

    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not got.done():
            got.set_result(Channel(reader, writer))

    server = await asyncio.start_server(connected, host, port)
    ready()
    try:
        channel = await asyncio.wait_for(got, timeout_s)
    except asyncio.TimeoutError:
        raise RuntimeError(f"no run connected within {timeout_s:g} s") from None
    finally:
        server.close()
    try:
        await mosaik_api_v3.run_simulator(channel, sim, api_compliant=mosaik_api_v3.check_api_compliance(sim))
    finally:
        await channel.close()


def serve(kind: str, addr: str, server: bool, controller: str | None = None, start_timeout_s: int = 3600,
          ready: Callable[[], None] = lambda: None) -> int:
    """Run the simulator until the run it belongs to ends (or its connection drops); ``ready()`` once listening."""
    import mosaik_api_v3

    from dercosim.sims.connection import harden_channels

    harden_channels()  # a run killed hard resets the connection: the host ends instead of waiting forever
    sim = make_simulator(kind, controller)
    host, port = parse_addr(addr)
    if server:
        asyncio.run(_serve_once(sim, host, port, start_timeout_s, ready))
    else:
        _leave_signals_to_the_run()
        asyncio.run(mosaik_api_v3.run_as_client(sim, host, port))
    return 0


def _leave_signals_to_the_run() -> None:
    """A simulator the run started (mosaik's ``cmd``) is in the run's process group, so Ctrl-C in the terminal, or
    a SIGTERM to the group, reaches it too. Dying then would turn the run's clean stop (the record joined, exit
    130/143) into "connection lost": the simulator ignores both and ends when the run closes its connection.
    Should the run itself die without closing it, a watch on the parent process ends the simulator within ~1 s,
    so it never outlives the run."""
    import os
    import signal
    import threading
    import time

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)  # the run is gone (its connection may not have told us): do not outlive it

    threading.Thread(target=watch, name="dercosim-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=MOVABLE)
    ap.add_argument("addr", help="HOST:PORT")
    ap.add_argument("--server", action="store_true", help="wait for mosaik to connect (default: connect to it)")
    ap.add_argument("--controller", help="Controllers only: the controller this host runs (file.py:Class)")
    args = ap.parse_args(argv)
    return serve(args.kind, args.addr, args.server, args.controller)


if __name__ == "__main__":
    sys.exit(main())
