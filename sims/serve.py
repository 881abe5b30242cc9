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


class _Replay:
    """A stream reader that first gives back the bytes already read from it (the run's first message)."""

    def __init__(self, reader: asyncio.StreamReader, head: bytes) -> None:
        self.reader, self.head = reader, head

    async def readexactly(self, n: int) -> bytes:
        if not self.head:
            return await self.reader.readexactly(n)
        take, self.head = self.head[:n], self.head[n:]
        return take + (await self.reader.readexactly(n - len(take)) if len(take) < n else b"")


#: how long a new connection may take to send the first bytes of mosaik's ``init`` request
FIRST_BYTES_S = 30.0


async def _first_request(reader: asyncio.StreamReader) -> tuple[bytes, Any]:
    """The raw bytes and the decoded content of a connection's first message, if it is mosaik's ``init``
    request (``[0, id, ["init", [sid], {...}]]``); ``ValueError`` saying what it is not, otherwise."""
    import json

    head = await asyncio.wait_for(reader.readexactly(5), FIRST_BYTES_S)
    if head[4:5] != b"[":  # mosaik frames JSON arrays behind a 4-byte length; an HTTP probe, a port scan are not
        raise ValueError(f"it does not speak mosaik's protocol (it began with {head!r})")
    body = head[4:] + await reader.readexactly(int.from_bytes(head[:4], "big") - 1)
    try:
        msg = json.loads(body)
        kind, msg_id, (func, args, kwargs) = msg
        if (kind != 0 or func != "init" or not isinstance(msg_id, int) or not isinstance(args[0], str)
                or not isinstance(kwargs, dict)):
            raise ValueError
    except (ValueError, TypeError, IndexError, UnicodeDecodeError):
        raise ValueError("its first message is not mosaik's init request") from None
    return head[:4] + body, msg


async def _serve_once(sim: Any, kind: str, host: str, port: int, timeout_s: float, ready: Callable[[], None],
                      say: Callable[[str], None]) -> None:
    """mosaik_api_v3's ``run_as_server``, saying when the port is bound (so a caller knows it may connect), and
    serving the first run that asks for this kind of simulator: a connection that is not a mosaik run (a port
    scan, a health check, a browser) is closed and said; a run that asks for another kind is refused with a
    reply that names both (its ``[processes]`` key points at the wrong host); the host keeps waiting."""
    import mosaik_api_v3
    from mosaik_api_v3.connection import FAILURE, Channel, encode

    got: asyncio.Future = asyncio.get_running_loop().create_future()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            raw, (_, msg_id, (_, (sid, *_), _)) = await _first_request(reader)
        except (ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            why = exc if isinstance(exc, ValueError) else ("it sent nothing" if isinstance(exc, asyncio.TimeoutError)
                                                           else "it closed before a whole message")
            say(f"dercosim: ignored a connection from {where}: {why}; still waiting for a run")
            writer.close()
            return
        asked = sid.rpartition("-")[0]
        if asked != kind or got.done():
            why = (f"this host serves {kind}, the run asked it for {asked} (check [processes] {asked.lower()})"
                   if asked != kind else "this host already serves another run")
            writer.write(encode([FAILURE, msg_id, ["ValueError", why]]))
            await writer.drain()
            writer.close()
            say(f"dercosim: refused a run from {where}: {why}" + ("; still waiting for a run" if not got.done() else ""))
            return
        got.set_result(Channel(_Replay(reader, raw), writer))  # type: ignore[arg-type]

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
          ready: Callable[[], None] = lambda: None, say: Callable[[str], None] = lambda msg: None) -> int:
    """Run the simulator until the run it belongs to ends (or its connection drops); ``ready()`` once listening."""
    import mosaik_api_v3

    from dercosim.sims.connection import harden_channels

    harden_channels()  # a run killed hard resets the connection: the host ends instead of waiting forever
    sim = make_simulator(kind, controller)
    host, port = parse_addr(addr)
    if server:
        asyncio.run(_serve_once(sim, kind, host, port, start_timeout_s, ready, say))
    else:
        _leave_signals_to_the_run(sim)
        asyncio.run(mosaik_api_v3.run_as_client(sim, host, port))
    return 0


def _leave_signals_to_the_run(sim: Any) -> None:
    """A simulator the run started (mosaik's ``cmd``) is in the run's process group, so Ctrl-C in the terminal, or
    a SIGTERM to the group (``kill %1``), reaches it too. Dying then would turn the run's clean stop (the record
    joined, exit 130/143) into "connection lost": the simulator ignores SIGINT, and takes a SIGTERM as "exit once
    the run has said stop" (mosaik terminates its subprocesses that way at the end and waits only 1 s: the exit
    then skips the interpreter's slow teardown). Should the run itself die without closing the connection, a
    watch on the parent process ends the simulator within ~1 s, so it never outlives the run."""
    import os
    import signal
    import threading
    import time

    state = {"finished": False, "asked": False}

    def on_term(signum: int, frame: object) -> None:
        if state["finished"]:
            os._exit(0)
        state["asked"] = True  # the run is still stepping: it will say stop

    finalize = sim.finalize

    def finalize_then_exit_if_asked() -> None:
        try:
            finalize()
        finally:
            state["finished"] = True
            if state["asked"]:
                os._exit(0)

    sim.finalize = finalize_then_exit_if_asked
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
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
