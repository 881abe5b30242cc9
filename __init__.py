"""dercosim: a co-simulation testbed for distributed energy resources on a distribution feeder.

mosaik couples the feeder (full AC power flow every step), households, batteries with their power-management loop,
controllers, a day-ahead market and a smart contract on one clock, from a scenario file. From Python::

    import dercosim as dc
    sc = dc.load("fleet_market_s4")          # a bundled scenario's name or a path
    sc.set("contract.interval_s", 60)        # one key, validated again as a whole
    res = dc.run(sc, start="10:00", until="2h")
    res.households                           # a tidy frame, read lazily from the run folder
    res.plot.market()                        # a matplotlib figure

The command line (``dercosim run``, ``show``, ``validate``, ``study``, ``sweep``) does the same from a shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

if TYPE_CHECKING:
    from dercosim.api import Result, ScenarioError, load, run

__all__ = ["Result", "ScenarioError", "__version__", "load", "run"]


def __getattr__(name: str) -> Any:
    # the API pulls in pydantic and the scenario schema: only when it is used, so ``import dercosim`` stays light
    if name in ("load", "run", "Result", "ScenarioError"):
        from dercosim import api

        return getattr(api, name)
    raise AttributeError(f"module 'dercosim' has no attribute {name!r}")
