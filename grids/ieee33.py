"""The IEEE 33-bus feeder (Baran & Wu 1989) from ``pandapower.networks.case33bw``.

Bus numbers at every dercosim interface are the papers' 1-based numbers
(bus 1 is the substation, bus 18 the far end of the main branch). The
conversion to pandapower's 0-based index happens here and nowhere else.

References
----------
- Baran & Wu 1989: M. E. Baran and F. F. Wu, "Network reconfiguration in distribution systems for loss reduction
    and load balancing," IEEE Transactions on Power Delivery 4(2), 1989. (the 33-bus test feeder)
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pandapower is imported where a net is built, not by everything that needs N_BUS
    import pandapower as pp

N_BUS = 33
SLACK_BUS = 1
#: Base load of the case (Baran & Wu): 3.715 MW, 2.300 MVAr.
BASE_P_KW_TOTAL = 3715.0
BASE_Q_KVAR_TOTAL = 2300.0


def bus_index(bus: int | npt.ArrayLike) -> int | np.ndarray:
    """0-based pandapower index of 1-based bus number(s); raises on 0 or > 33."""
    arr = np.asarray(bus)
    if np.any(arr < 1) or np.any(arr > N_BUS):
        raise ValueError(f"bus numbers are 1..{N_BUS} (1-based), got {bus!r}")
    idx = arr.astype(int) - 1
    return int(idx) if idx.ndim == 0 else idx


def bus_numbers() -> np.ndarray:
    """All 1-based bus numbers, in pandapower index order."""
    return np.arange(1, N_BUS + 1)


@functools.lru_cache(maxsize=1)
def _case33bw() -> pp.pandapowerNet:
    """pandapower's case33bw, parsed once per process (callers get deep copies).

    pandapower parses its JSON in ~1.2 s; the parsed net is kept as a pickle in
    ``$DERCOSIM_CACHE`` (default ``~/.cache/dercosim``)``/grids/``, keyed by the
    pandapower and pandas versions, and read back in milliseconds. A cache that
    cannot be read or written is ignored.
    """
    import pandas
    import pandapower
    import pandapower.networks as pn

    path = (Path(os.environ.get("DERCOSIM_CACHE", Path.home() / ".cache" / "dercosim")) / "grids"
            / f"case33bw-pandapower{pandapower.__version__}-pandas{pandas.__version__}.pickle")
    try:
        net = pickle.loads(path.read_bytes())
        if isinstance(net, pandapower.pandapowerNet):
            return net
    except Exception:  # noqa: BLE001 - no cache, or one from elsewhere: parse the case again
        pass
    net = pn.case33bw()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed (as the EVM cache)
    try:  # a cache that cannot be written only costs the next run the parse
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(pickle.dumps(net, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 - a read-only or full disk, or a net that will not pickle
        tmp.unlink(missing_ok=True)
    return net


def make_net(line_max_i_ka: float | None = None) -> pp.pandapowerNet:
    """case33bw with exactly one load per bus (load index == bus index); a new net on every call.

    The slack bus carries a zero load so that every bus has one place where
    injections are written. ``line_max_i_ka`` sets the thermal rating of every
    line (the case file has none); None keeps pandapower's placeholder.
    """
    net = copy.deepcopy(_case33bw())
    p_mw = np.zeros(N_BUS)
    q_mvar = np.zeros(N_BUS)
    p_mw[net.load.bus.values] = net.load.p_mw.values
    q_mvar[net.load.bus.values] = net.load.q_mvar.values
    import pandapower as pp

    net.load.drop(net.load.index, inplace=True)
    for b in range(N_BUS):
        pp.create_load(net, bus=b, p_mw=p_mw[b], q_mvar=q_mvar[b], index=b, name=f"bus_{b + 1}")
    if line_max_i_ka is not None:
        net.line["max_i_ka"] = float(line_max_i_ka)
    return net


def base_load_kw() -> tuple[np.ndarray, np.ndarray]:
    """Base load of the case per bus (0-based index): (p_kw, q_kvar); new arrays on every call."""
    p_kw, q_kvar = _base_load_kw()
    return p_kw.copy(), q_kvar.copy()


@functools.lru_cache(maxsize=1)
def _base_load_kw() -> tuple[np.ndarray, np.ndarray]:
    net = _case33bw()
    p_kw = np.zeros(N_BUS)
    q_kvar = np.zeros(N_BUS)
    np.add.at(p_kw, net.load.bus.values, net.load.p_mw.values * 1000.0)
    np.add.at(q_kvar, net.load.bus.values, net.load.q_mvar.values * 1000.0)
    return p_kw, q_kvar
