"""Feeders: the IEEE 33-bus case, any pandapower network by its function name, a SimBench code, or a user's
pandapower JSON file, each prepared the same way for the power flow and the linear models.

``[grid] feeder`` names one of:

- ``"ieee33"`` (default): ``pandapower.networks.case33bw`` as :mod:`dercosim.grids.ieee33` builds it (Baran & Wu
  1989), buses numbered 1..33 as in the papers;
- a function of ``pandapower.networks`` that builds a network without arguments, e.g.
  ``"create_cigre_network_lv"``, ``"create_kerber_dorfnetz"``, ``"mv_oberrhein"``, ``"lv_schutterwald"``;
- a SimBench code, e.g. ``"1-LV-rural1--0-sw"`` (the ``simbench`` package ships its grids: nothing is fetched);
- a path to a pandapower JSON file (``pandapower.to_json``), relative to the scenario file.

Preparation (:func:`prepare`): out-of-service buses and their elements are dropped; switches are applied (a
closed bus-bus switch fuses its buses, whose names both stay valid; an open line or transformer switch takes the
branch out of service); the case's loads (and asymmetric loads, summed over the phases) become the per-bus *base
load*, and the net then carries exactly one load per bus (load index = bus position) where every step's
injections are written; the case's static generators and storage are left out (their fixed setpoints
are no day's output: households bring their own PV). Buses are numbered 1..n in the net's bus order; scenario
keys name them by number or by the net's bus name. A net without an external grid, or with in-service buses no
external grid supplies, is refused with the buses named.

References
----------
- Baran & Wu 1989: M. E. Baran and F. F. Wu, "Network reconfiguration in distribution systems for loss reduction
    and load balancing," IEEE Transactions on Power Delivery 4(2), 1989. (the 33-bus test feeder)
- Meinecke et al. 2020: S. Meinecke et al., "SimBench—A Benchmark Dataset of Electric Power Systems to Compare
    Innovative Solutions Based on Power Flow Analysis," Energies 13(12):3290, 2020. (the SimBench grids)
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dercosim.grids import ieee33

#: a SimBench code: voltage levels, grid type, scenario and switch type, e.g. "1-LV-rural1--0-sw"
SIMBENCH_CODE = re.compile(r"^1-(EHV|HV|MV|LV)[A-Z]*-.+-[0-2]-(sw|no_sw)$")

#: pandapower networks whose loads are single households (a household group can take them over one for one)
HOUSEHOLD_CASES = ("create_kerber", "create_dickert", "lv_schutterwald", "ieee_european_lv", "1-LV-")

#: distribution networks of pandapower suggested when a name is wrong (any function of pandapower.networks that
#: builds a net without arguments is accepted)
SUGGESTED = ("case33bw", "create_cigre_network_lv", "create_cigre_network_mv", "mv_oberrhein",
             "create_kerber_dorfnetz", "create_kerber_landnetz_kabel_1", "create_kerber_vorstadtnetz_kabel_1",
             "create_dickert_lv_network", "lv_schutterwald", "ieee_european_lv_asymmetric")


class FeederError(ValueError):
    """A feeder that cannot be built or solved as given; the message says what and where."""


@dataclass(frozen=True)
class Buses:
    """A feeder's buses as scenario keys name them: numbers 1..n (1-based positions) or the net's bus names."""

    title: str  #: the feeder, as messages name it
    names: tuple[str, ...]  #: bus name per position
    aliases: dict[str, int] = field(repr=False)  #: every name a scenario may use (fused buses' too) -> number
    load_numbers: tuple[int, ...] = field(repr=False)  #: buses that carry a load in the case (``"all"``)
    vn_kv: tuple[float, ...] = field(repr=False, default=())  #: nominal voltage per bus, kV

    def load_numbers_at(self, level: str) -> list[int]:
        """The load buses at a nominal voltage written as ``"0.4kV"`` (FeederError lists the levels there are)."""
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*kV\s*", level)
        levels = sorted({float(v) for v in self.vn_kv})
        if found is None:
            raise FeederError(f'expected "all", a voltage level such as "{levels[0]:g}kV" or a list of buses, '
                              f"got {level!r}")
        kv = float(found.group(1))
        picked = [b for b in self.load_numbers if abs(self.vn_kv[b - 1] - kv) < 1e-6]
        if not picked:
            raise FeederError(f"{self.title} has no load bus at {kv:g} kV (its levels: "
                              f"{', '.join(f'{v:g} kV' for v in levels)})")
        return picked

    @property
    def n_bus(self) -> int:
        return len(self.names)

    def number_of(self, ref: int | str) -> int:
        """The bus number of ``ref``: a number (1..n) or a bus name; FeederError names what exists."""
        if isinstance(ref, bool):
            raise FeederError(f"expected a bus number or name, got {ref!r}")
        if isinstance(ref, (int, np.integer)):
            if 1 <= int(ref) <= self.n_bus:
                return int(ref)
            raise FeederError(f"expected a bus of {self.title}, 1..{self.n_bus} (1-based numbering)")
        found = self.aliases.get(str(ref))
        if found is None:
            some = ", ".join(repr(n) for n in self.names[:6])
            raise FeederError(f"{self.title} has no bus named {ref!r} (its {self.n_bus} buses are named {some}, ...; "
                              f"or give a number 1..{self.n_bus})")
        return found


#: IEEE-33's buses without building the net (scenario validation need not import pandapower)
IEEE33_BUSES = Buses(title="the IEEE 33-bus feeder", names=tuple(str(b) for b in range(1, ieee33.N_BUS + 1)),
                     aliases={str(b): b for b in range(1, ieee33.N_BUS + 1)},
                     load_numbers=tuple(range(2, ieee33.N_BUS + 1)), vn_kv=(12.66,) * ieee33.N_BUS)


def buses_of(spec: str, source_dir: str | Path | None = None) -> Buses:
    """The buses of the feeder ``spec`` names (IEEE-33's without building its net)."""
    return IEEE33_BUSES if spec == "ieee33" else load_feeder(spec, source_dir).buses


@dataclass(frozen=True)
class Feeder:
    """A prepared feeder: its net, bus names, slack buses and base load, all in bus-position order.

    Bus *numbers* are 1-based positions (IEEE-33: the papers' numbers); every dercosim interface speaks numbers,
    the net's names are for scenario files, results and plots.
    """

    spec: str  #: what the scenario named
    title: str  #: a readable name for plots and reports
    net: Any = field(repr=False)  #: pandapower net, one load per bus (load index = bus index = position)
    names: tuple[str, ...]  #: bus name per position
    aliases: dict[str, int] = field(repr=False)  #: every name a scenario may use (fused buses' too) -> number
    slack_numbers: tuple[int, ...]  #: buses with an external grid
    base_p_kw: np.ndarray = field(repr=False)  #: the case's own load per bus, kW
    base_q_kvar: np.ndarray = field(repr=False)  #: kvar
    vn_kv: np.ndarray = field(repr=False)  #: nominal voltage per bus, kV
    radial: bool  #: every supplied component is a tree (LinDistFlow applies)
    case_is_households: bool  #: the case's loads are single households (SimBench LV, Kerber, Dickert, ...)
    rated_lines: bool  #: the case's lines carry thermal ratings (IEEE-33's file has only a placeholder)
    parent: np.ndarray = field(repr=False)  #: parent position of each bus on its tree (-1 at a slack or if meshed)

    @property
    def n_bus(self) -> int:
        return len(self.names)

    @property
    def numbers(self) -> np.ndarray:
        """All bus numbers, 1..n."""
        return np.arange(1, self.n_bus + 1)

    @property
    def load_numbers(self) -> list[int]:
        """Buses that carry a load in the case (``buses = "all"``)."""
        return [int(b) + 1 for b in np.flatnonzero((self.base_p_kw != 0) | (self.base_q_kvar != 0))]

    @property
    def buses(self) -> Buses:
        return Buses(self.title, self.names, self.aliases, tuple(self.load_numbers),
                     tuple(float(v) for v in self.vn_kv))

    def name_of(self, number: int) -> str:
        return self.names[int(number) - 1]

    def number_of(self, ref: int | str) -> int:
        """The bus number of ``ref``: a number (1..n) or a bus name; FeederError names what exists."""
        return self.buses.number_of(ref)

    def make_net(self, line_max_i_ka: float | None = None) -> Any:
        """A new copy of the prepared net; ``line_max_i_ka`` sets every line's thermal rating."""
        net = copy.deepcopy(self.net)
        if line_max_i_ka is not None:
            net.line["max_i_ka"] = float(line_max_i_ka)
        return net

    def paths(self) -> list[list[int]]:
        """Radial paths from the slack outwards (bus numbers), for voltage-profile plots: the longest path first,
        then, from each bus already drawn, the longest path of the branches leaving it. Empty for a meshed net."""
        if not self.radial:
            return []
        children: dict[int, list[int]] = {}
        for j, p in enumerate(self.parent):
            if p >= 0:
                children.setdefault(int(p), []).append(j)

        @functools.cache
        def depth(j: int) -> int:
            return 1 + max((depth(c) for c in children.get(j, [])), default=0)

        out: list[list[int]] = []

        def walk(start: int, first: int | None = None) -> None:
            path = [start] if first is None else [start, first]
            j = path[-1]
            while children.get(j):
                j = max(children[j], key=depth)
                path.append(j)
            out.append([b + 1 for b in path])
            for k in path[1:] if first is not None else path:
                for c in children.get(k, []):
                    if c not in path:
                        walk(k, c)

        for s in self.slack_numbers:
            walk(s - 1)
        return out


def _cache_dir() -> Path:
    return Path(os.environ.get("DERCOSIM_CACHE", Path.home() / ".cache" / "dercosim")) / "grids"


def _versions_key() -> str:
    import pandapower

    try:
        import simbench

        sb = simbench.__version__
    except ImportError:
        sb = "none"
    return f"pandapower{pandapower.__version__}-simbench{sb}"


def _raw_net(spec: str, source_dir: Path | None) -> tuple[Any, str, bool]:
    """The case's pandapower net as published, its title, and whether its loads are households."""
    import pandapower as pp
    import pandapower.networks as pn

    households = any(spec.startswith(p) for p in HOUSEHOLD_CASES)
    if spec.endswith(".json"):
        path = Path(spec)
        if not path.is_absolute() and source_dir is not None:
            path = source_dir / path
        if not path.exists():
            raise FeederError(f"grid.feeder: {path}: no such file (a pandapower JSON file, pandapower.to_json)")
        try:
            net = pp.from_json(str(path))
        except Exception as exc:  # noqa: BLE001 - anything pandapower cannot read is not a net
            raise FeederError(f"grid.feeder: {path}: not a pandapower network ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
        if not isinstance(net, pp.pandapowerNet):
            raise FeederError(f"grid.feeder: {path}: not a pandapower network (found {type(net).__name__})")
        return net, path.name, households
    if SIMBENCH_CODE.match(spec):
        try:
            import simbench
        except ImportError:
            raise FeederError("grid.feeder: SimBench grids need the simbench package: "
                              "pip install 'dercosim[grids]'") from None
        codes = [c for c in simbench.collect_all_simbench_codes() if c.startswith("1-")]
        if spec not in codes:
            near = [c for c in codes if c.split("-")[:2] == spec.split("-")[:2] and c.endswith("0-sw")][:6] or \
                [c for c in codes if "-LV-" in c and c.endswith("--0-sw")][:6]
            raise FeederError(f"grid.feeder: {spec!r} is not a SimBench code; e.g. {', '.join(near)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return simbench.get_simbench_net(spec), f"SimBench {spec}", households
    builder = getattr(pn, spec, None) if re.fullmatch(r"[a-z][a-z0-9_]*", spec) else None
    if builder is None or not callable(builder):
        raise FeederError(f"grid.feeder: unknown feeder {spec!r}; expected \"ieee33\", a pandapower network "
                          f"({', '.join(SUGGESTED)}, or any function of pandapower.networks), a SimBench code "
                          f"(e.g. \"1-LV-rural1--0-sw\", \"1-LV-semiurb4--0-sw\", \"1-MV-rural--0-sw\") or a path "
                          f"to a pandapower .json file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = builder()
    except TypeError as exc:
        raise FeederError(f"grid.feeder: pandapower.networks.{spec} needs arguments ({exc}); save the net you "
                          f"want with pandapower.to_json and name the file") from None
    if not isinstance(net, pp.pandapowerNet):
        raise FeederError(f"grid.feeder: pandapower.networks.{spec} does not build a network")
    return net, f"pandapower {spec}", households


def prepare(net: Any, spec: str, title: str, case_is_households: bool) -> Feeder:
    """The :class:`Feeder` of a published net (see the module doc for what preparation does)."""
    import pandapower as pp
    import pandapower.toolbox as tb
    import pandapower.topology as top

    net = copy.deepcopy(net)
    if not len(net.ext_grid) or not net.ext_grid.in_service.any():
        raise FeederError(f"grid.feeder: {title} has no external grid (ext_grid) in service: nothing sets the "
                          f"slack voltage")
    names = {int(i): (str(n) if n is not None and n == n and str(n) != "" else str(i))
             for i, n in net.bus.name.items()}
    out = net.bus.index[~net.bus.in_service.astype(bool)]
    if len(out):
        tb.drop_buses(net, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb.drop_out_of_service_elements(net)
    aliases_to_bus: dict[str, int] = {}
    sw = net.switch
    if len(sw):
        for et, table in (("l", "line"), ("t", "trafo")):
            open_ = sw[(sw.et == et) & ~sw.closed.astype(bool)]
            if len(open_):
                net[table].loc[open_.element.unique(), "in_service"] = False
        closed_bb = sw[(sw.et == "b") & sw.closed.astype(bool)]
        for b1, b2 in zip(closed_bb.bus, closed_bb.element):
            if b1 in net.bus.index and b2 in net.bus.index and b1 != b2:
                aliases_to_bus[names[int(b2)]] = int(b1)
                tb.fuse_buses(net, int(b1), int(b2))
                for alias, v in list(aliases_to_bus.items()):
                    if v == int(b2):
                        aliases_to_bus[alias] = int(b1)
        net.switch.drop(net.switch.index, inplace=True)
    unsupplied = sorted(top.unsupplied_buses(net))
    if unsupplied:
        some = ", ".join(repr(names[int(b)]) for b in unsupplied[:6])
        raise FeederError(f"grid.feeder: {title}: {len(unsupplied)} in-service buses are not reachable from an "
                          f"external grid ({some}{', ...' if len(unsupplied) > 6 else ''})")
    order = [int(b) for b in net.bus.index]
    position = {b: k for k, b in enumerate(order)}
    n = len(order)
    base_p = np.zeros(n)
    base_q = np.zeros(n)
    load = net.load[net.load.in_service.astype(bool)]
    scale = load.scaling.to_numpy(float) if "scaling" in load else 1.0
    np.add.at(base_p, [position[int(b)] for b in load.bus], load.p_mw.to_numpy(float) * scale * 1000.0)
    np.add.at(base_q, [position[int(b)] for b in load.bus], load.q_mvar.to_numpy(float) * scale * 1000.0)
    if len(net.asymmetric_load):
        asym = net.asymmetric_load[net.asymmetric_load.in_service.astype(bool)]
        idx = [position[int(b)] for b in asym.bus]
        np.add.at(base_p, idx, (asym.p_a_mw + asym.p_b_mw + asym.p_c_mw).to_numpy(float) * 1000.0)
        np.add.at(base_q, idx, (asym.q_a_mvar + asym.q_b_mvar + asym.q_c_mvar).to_numpy(float) * 1000.0)
        net.asymmetric_load.drop(net.asymmetric_load.index, inplace=True)
    for table in ("sgen", "storage", "asymmetric_sgen"):  # fixed setpoints are no day's output: left out
        if table in net and len(net[table]):
            net[table].drop(net[table].index, inplace=True)
    net.load.drop(net.load.index, inplace=True)
    bus_names = tuple(names[b] for b in order)
    tb.create_continuous_bus_index(net, start=0)
    for k in range(n):
        pp.create_load(net, bus=k, p_mw=0.0, q_mvar=0.0, index=k, name=f"bus_{k + 1}")
    aliases = {name: k + 1 for k, name in enumerate(bus_names)}
    if len(set(bus_names)) != n:  # names repeat (lv_schutterwald): numbers only, and the names of unique buses
        counts: dict[str, int] = {}
        for name in bus_names:
            counts[name] = counts.get(name, 0) + 1
        aliases = {name: k + 1 for k, name in enumerate(bus_names) if counts[name] == 1}
    for name, old in aliases_to_bus.items():
        if old in position:
            aliases.setdefault(name, position[old] + 1)
    slack = tuple(sorted({int(b) + 1 for b in net.ext_grid.bus[net.ext_grid.in_service.astype(bool)]}))
    parent, radial = _tree(net, [s - 1 for s in slack])
    return Feeder(spec=spec, title=title, net=net, names=bus_names, aliases=aliases, slack_numbers=slack,
                  base_p_kw=base_p, base_q_kvar=base_q, vn_kv=net.bus.vn_kv.to_numpy(float), radial=radial,
                  case_is_households=case_is_households, parent=parent, rated_lines=True)


def _tree(net: Any, roots: list[int]) -> tuple[np.ndarray, bool]:
    """Parent of each bus on the tree of in-service lines and transformers from the roots, and whether the net is
    radial (every bus reached exactly once)."""
    from dercosim.grids.powerflow import branch_ends

    n = len(net.bus)
    adjacent: list[list[int]] = [[] for _ in range(n)]
    ends = branch_ends(net)
    edges = len(ends)
    for u, v in ends:
        adjacent[u].append(v)
        adjacent[v].append(u)
    parent = np.full(n, -1)
    seen = np.zeros(n, bool)
    radial = True
    for r in roots:
        if seen[r]:
            radial = False
            continue
        seen[r] = True
        stack = [r]
        while stack:
            u = stack.pop()
            for v in adjacent[u]:
                if v == parent[u]:
                    continue
                if seen[v]:
                    radial = False
                    continue
                seen[v] = True
                parent[v] = u
                stack.append(v)
    radial = radial and edges == n - len(roots)
    return (parent if radial else np.full(n, -1)), radial


@functools.lru_cache(maxsize=8)
def _load(spec: str, source_dir: str | None, stamp: str) -> Feeder:
    if spec == "ieee33":
        net = ieee33.make_net()
        p, q = ieee33.base_load_kw()
        names = tuple(str(b) for b in ieee33.bus_numbers())
        parent, radial = _tree(net, [ieee33.SLACK_BUS - 1])
        return Feeder(spec="ieee33", title="the IEEE 33-bus feeder", net=net, names=names,
                      aliases={n: k + 1 for k, n in enumerate(names)}, slack_numbers=(ieee33.SLACK_BUS,),
                      base_p_kw=p, base_q_kvar=q, vn_kv=net.bus.vn_kv.to_numpy(float), radial=radial,
                      case_is_households=False, parent=parent, rated_lines=False)
    # keyed by this module's own source too: a change to how nets are prepared never reads an old preparation
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    key = hashlib.sha256(f"{spec}\0{source_dir}\0{stamp}\0{_versions_key()}\0{code}".encode()).hexdigest()[:24]
    path = _cache_dir() / f"feeder-{key}.pickle"
    try:
        found = pickle.loads(path.read_bytes())
        if isinstance(found, Feeder):
            return found
    except Exception:  # noqa: BLE001 - no cache, or one from elsewhere: build it again
        pass
    net, title, households = _raw_net(spec, Path(source_dir) if source_dir else None)
    feeder = prepare(net, spec, title, households)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # a cache that cannot be written only costs the next run the build
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(pickle.dumps(feeder, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
    return feeder


def load_feeder(spec: str, source_dir: str | Path | None = None) -> Feeder:
    """The prepared feeder ``spec`` names (see the module doc); cached in the process and on disk
    (``$DERCOSIM_CACHE/grids``). A JSON file is read again when it changes."""
    stamp = ""
    folder = str(Path(source_dir).resolve()) if source_dir is not None else None
    if spec.endswith(".json"):
        path = Path(spec) if Path(spec).is_absolute() or folder is None else Path(folder) / spec
        stamp = f"{path.stat().st_mtime_ns}-{path.stat().st_size}" if path.exists() else "missing"
    else:
        folder = None  # a named network does not depend on where the scenario is
    return _load(spec, folder, stamp)
