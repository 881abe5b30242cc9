"""What shapes a run's numbers besides its scenario: dercosim's version and commit, Python, and the versions of
the solvers and engines; and the optional extras a scenario or command needs.

Recorded in every run's ``summary.json`` (``versions``) and in the metadata of its ``timeseries.parquet``, so a
result can be traced to the software that produced it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import subprocess
from pathlib import Path

from dercosim import __version__

#: distributions whose version shapes the numbers: the solvers, the power-flow engines, the co-simulation
#: framework, the contract's compiler and EVM, and the numerical base
SHAPING = ("casadi", "piqp", "numba", "llvmlite", "highspy", "lightsim2grid", "pandapower", "mosaik",
           "mosaik-api-v3", "numpy", "scipy", "pandas", "pyarrow", "vyper", "py-evm", "web3", "dask", "distributed", "simbench",
           "gymnasium", "pettingzoo", "greenlet")

#: optional extras: name → (the modules it provides, what needs it)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "evm": (("vyper", "web3", "eth_tester", "eth"), "the smart contract on an EVM ([contract] engine = \"evm\")"),
    "sweep": (("dask", "distributed"), "dercosim sweep (dask.distributed)"),
    "grids": (("simbench",), "a SimBench feeder ([grid] feeder = \"1-LV-...\")"),
    "gym": (("gymnasium", "pettingzoo", "greenlet"),
            "dercosim.gym (learning controllers: gymnasium and PettingZoo environments)"),
}


class MissingExtra(ImportError):
    """A scenario or command needs an optional extra that is not installed; the message names it."""


def require_extra(extra: str) -> None:
    """Raise :class:`MissingExtra` naming ``pip install 'dercosim[extra]'`` if the extra's modules are absent."""
    modules, purpose = EXTRAS[extra]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"{purpose} needs the optional extra '{extra}' ({', '.join(missing)} not installed): "
                           f"pip install 'dercosim[{extra}]' (or `make install` in a checkout, which installs all)")


@functools.cache
def _commit() -> str | None:
    """The git commit of the checkout dercosim runs from (``+dirty`` with uncommitted changes), None if none."""
    root = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        if not top or Path(top).resolve() != root:  # dercosim installed inside another project's repository
            return None
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def versions() -> dict[str, str | None]:
    """dercosim's version and commit, Python's, and each of :data:`SHAPING` (None where not installed)."""
    found: dict[str, str | None] = {"dercosim": __version__, "commit": _commit(),
                                    "python": platform.python_version()}
    for dist in SHAPING:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    if found["piqp"] is None and found["casadi"] is not None:  # the household MPC's PIQP is casadi's plugin
        import casadi

        found["piqp"] = f"casadi {found['casadi']} plugin" if casadi.has_conic("piqp") else None
    return found
