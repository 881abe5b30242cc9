"""mosaik's remote-simulator channel, made to notice a peer that dies.

``mosaik_api_v3.connection.Channel`` ends its reader on a clean close (``IncompleteReadError``): every waiting
call then fails and mosaik reports the connection as closed. A peer killed hard (``kill -9`` of a served host or
a simulator subprocess) often resets the connection instead (``ConnectionResetError``); the reader then dies
without telling anyone, and the run, or the served host, waits forever. :func:`harden_channels` makes a reset
end the reader as a close does, in this process (the run and ``dercosim serve`` both apply it).
"""

from __future__ import annotations

import asyncio
from typing import Any


def harden_channels() -> None:
    """Make a reset connection fail the waiting calls of a mosaik channel as a closed one does (idempotent)."""
    from mosaik_api_v3 import connection

    channel: Any = connection.Channel
    if getattr(channel, "_dercosim_hardened", False):
        return
    original = channel._receive_forever

    async def receive_forever(self: Any) -> None:
        try:
            await original(self)
        except OSError:  # ConnectionResetError, BrokenPipeError, ...: the peer is gone, as after a close
            closed = asyncio.IncompleteReadError(b"", None)
            for future in self._outgoing_request_futures.values():
                if not future.done():
                    future.set_exception(closed)
            self._incoming_requests.put_nowait(connection.EndOfRequests())

    channel._receive_forever = receive_forever
    channel._dercosim_hardened = True
