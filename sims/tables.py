"""Whole columns between simulators: one ``Table`` entity per simulator instead of one mosaik value per entity.

Connecting every household, battery and controller through mosaik costs one
input-dict entry per entity, attribute and minute (at 2,000 households about
70,000 a minute, most of mosaik's share of a step). The :func:`tabled`
decorator gives a simulator a second model, ``Table``: its single entity
has one attribute, ``table``, whose value is ``{attribute: [value of each
entity, in the order given at creation]}``, read through the simulator's
own ``get_data`` (so the numbers are the ones a per-entity connection would
carry). Plain lists, so a simulator in another process sends it through
mosaik's JSON protocol unchanged. The recorder knows the entity of each
position (``RecorderSim.create(tables=...)``); another simulator's Table
unpacks what it receives into the per-entity inputs mosaik would have given
(``inputs`` at creation), so its ``step`` sees the same dicts. The world
decides which connections go this way (``scenarios/world.py``). A simulator
that holds its entities in arrays may define ``column(attr, eids)``, the
values of one attribute for those entities as a list (None: not this one),
which spares building a dict per entity. A simulator whose entities are positions in ``self.index``
(name -> position) may name attributes in ``column_inputs``: those arrive as arrays instead of per-entity
dicts, :func:`gathered` gives them (the sum over sources per entity, added in the order the per-entity dicts
would have been summed, so the same numbers; and how many sources sent a value).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import numpy as np

#: a simulator class
S = TypeVar("S")

TABLE_MODEL = "Table"
TABLE_EID = "__table__"
TABLE_ATTR = "table"


def tabled(cls: type[S]) -> type[S]:
    """Class decorator: add the ``Table`` model to a mosaik simulator (see the module doc)."""
    sim: Any = cls
    init, create, get_data, step = sim.init, sim.create, sim.get_data, sim.step

    @functools.wraps(init)
    def init_wrapper(self: Any, sid: str, *args: Any, **kwargs: Any) -> dict:
        meta = init(self, sid, *args, **kwargs)
        meta["models"][TABLE_MODEL] = {"public": True, "params": ["columns", "inputs"], "attrs": [TABLE_ATTR]}
        return meta

    @functools.wraps(create)
    def create_wrapper(self: Any, num: int, model: str, **params: Any) -> list[dict]:
        if model != TABLE_MODEL:
            return create(self, num, model, **params)
        if num != 1 or getattr(self, "_table_columns", None) is not None:
            raise ValueError(f"{type(self).__name__} holds at most one {TABLE_MODEL}")
        columns = {str(attr): [str(eid) for eid in eids] for attr, eids in (params.get("columns") or {}).items()}
        request: dict[str, list[str]] = {}
        for attr, eids in columns.items():
            for eid in eids:
                request.setdefault(eid, []).append(attr)
        self._table_columns, self._table_request = columns, request
        # other simulators' tables, to be unpacked into per-entity inputs: {their table's full id: [[attr,
        # position in its column, our entity, our attribute, the source entity's full id], ...]}
        self._table_inputs = {}  # {their table: [(attr, positions, [(our entity, our attribute, source), ...])]}
        for tid, rows in (params.get("inputs") or {}).items():
            by_attr: dict[str, tuple[list[int], list[tuple[str, str, str]]]] = {}
            for attr, pos, dst_eid, dst_attr, src in rows:
                positions, targets = by_attr.setdefault(str(attr), ([], []))
                positions.append(int(pos))
                targets.append((str(dst_eid), str(dst_attr), str(src)))
            self._table_inputs[str(tid)] = [(attr, pos, dst) for attr, (pos, dst) in by_attr.items()]
        return [{"eid": TABLE_EID, "type": TABLE_MODEL}]

    @functools.wraps(step)
    def step_wrapper(self: Any, time: int, inputs: dict[str, Any], max_advance: int) -> Any:
        given = inputs.pop(TABLE_EID, None)
        wanted = getattr(self, "column_inputs", ())
        if wanted:
            self._gathered = _gather_entity_inputs(self, inputs, wanted)
        if given:  # whole columns from other simulators: the per-entity inputs mosaik would have built
            for tid, table in given.get(TABLE_ATTR, {}).items():
                for attr, positions, targets in self._table_inputs.get(tid, ()):
                    values = table.get(attr)
                    if values is None:
                        continue
                    if wanted:
                        positions, targets = _gather_table_column(self, tid, attr, positions, targets, values)
                    for pos, (dst_eid, dst_attr, src) in zip(positions, targets):
                        inputs.setdefault(dst_eid, {}).setdefault(dst_attr, {})[src] = values[pos]
        return step(self, time, inputs, max_advance)

    @functools.wraps(get_data)
    def get_data_wrapper(self: Any, outputs: dict[str, list[str]]) -> dict[str, Any]:
        if TABLE_EID not in outputs:
            return get_data(self, outputs)
        rest = {eid: attrs for eid, attrs in outputs.items() if eid != TABLE_EID}
        table: dict[str, list[Any]] = {}
        slow: dict[str, list[str]] = {}  # columns the simulator cannot give as a whole: through its get_data
        for attr, eids in self._table_columns.items():
            values = self.column(attr, eids) if hasattr(self, "column") else None
            if values is None:
                slow[attr] = eids
            else:
                table[attr] = values
        if rest:
            request = _slow_request(slow, {eid: list(attrs) for eid, attrs in rest.items()})
        else:  # the usual case: the same request every step, made once (get_data only reads it)
            cache = self.__dict__.setdefault("_table_slow_request", {})
            key = tuple(slow)
            if key not in cache:
                cache[key] = _slow_request(slow, {})
            request = cache[key]
        data = get_data(self, request) if request else {}
        out = {eid: {attr: data[eid][attr] for attr in attrs} for eid, attrs in rest.items()}
        table.update({attr: [data[eid].get(attr) for eid in eids] for attr, eids in slow.items()})
        out[TABLE_EID] = {TABLE_ATTR: table}
        return out

    sim.init, sim.create, sim.get_data, sim.step = init_wrapper, create_wrapper, get_data_wrapper, step_wrapper
    return cls


def _slow_request(slow: dict[str, list[str]], request: dict[str, list[str]]) -> dict[str, list[str]]:
    """``request`` (entity -> attributes) extended by the columns given through ``get_data``."""
    for attr, eids in slow.items():
        for eid in eids:
            attrs = request.setdefault(eid, [])
            if attr not in attrs:
                attrs.append(attr)
    return request


def _gather_entity_inputs(sim: Any, inputs: dict[str, Any], wanted: Any) -> dict[str, tuple[Any, Any]]:
    """Start :func:`gathered`'s arrays from the per-entity inputs mosaik gave (connections that are not
    tables), taking those attributes out of ``inputs``; they come first, as in the dicts the tables extend."""
    n = len(sim.index)
    out = {attr: (np.zeros(n), np.zeros(n, np.int64)) for attr in wanted}
    for eid, attrs in inputs.items():
        for attr in wanted:
            sources = attrs.pop(attr, None)
            if sources:
                total, count = out[attr]
                j = sim.index[eid]
                for value in sources.values():
                    total[j] += value
                    count[j] += 1
    return out


def _gather_table_column(sim: Any, tid: str, attr: str, positions: list[int], targets: list[tuple[str, str, str]],
                         values: list[Any]) -> tuple[list[int], list[tuple[str, str, str]]]:
    """Add a table column's values for the attributes in ``column_inputs`` to :func:`gathered`'s arrays (None,
    no value, becomes NaN); returns the positions and targets left for the per-entity dicts."""
    plans = sim.__dict__.setdefault("_gather_plans", {})
    plan = plans.get((tid, attr))
    if plan is None:
        wanted = set(sim.column_inputs)
        split: dict[str, tuple[list[int], list[int]]] = {}
        rest_pos, rest_targets = [], []
        for pos, target in zip(positions, targets):
            if target[1] in wanted:
                src_pos, dst_pos = split.setdefault(target[1], ([], []))
                src_pos.append(pos)
                dst_pos.append(sim.index[target[0]])
            else:
                rest_pos.append(pos)
                rest_targets.append(target)
        plan = plans[(tid, attr)] = ([(dst_attr, np.array(src, np.int64), np.array(dst, np.int64),
                                       len(set(dst)) == len(dst)) for dst_attr, (src, dst) in split.items()],
                                     rest_pos, rest_targets)
    if not plan[0]:
        return plan[1], plan[2]
    column = np.asarray(values, dtype=np.float64)
    for dst_attr, src, dst, unique in plan[0]:
        total, count = sim._gathered[dst_attr]
        if unique:
            total[dst] += column[src]
            count[dst] += 1
        else:  # several sources for one entity: added one after another, in order
            np.add.at(total, dst, column[src])
            np.add.at(count, dst, 1)
    return plan[1], plan[2]


def gathered(sim: Any, attr: str) -> tuple[np.ndarray, np.ndarray]:
    """An attribute of ``column_inputs`` this step: (the sum of its sources' values, the number of sources that
    sent one) per entity, in ``sim.index`` order."""
    return sim._gathered[attr]


def positions(sim: Any, eids: list[str]) -> Any:
    """Indices of ``eids`` in ``sim.index`` (name -> position), cached per list (a table's lists are fixed)."""
    cache = sim.__dict__.setdefault("_table_positions", {})
    found = cache.get(id(eids))
    if found is None or found[0] is not eids:
        found = cache[id(eids)] = (eids, np.array([sim.index[eid] for eid in eids], dtype=np.int64))
    return found[1]


def entity_data(sim: Any, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """mosaik's ``get_data`` for a simulator whose ``_vector(attr)`` gives an attribute of all its entities
    (positions in ``sim.index``): each requested attribute computed once, then read per entity as a Python
    number. An attribute it does not have is a KeyError."""
    vectors: dict[str, Any] = {}
    data = {}
    for eid, attrs in outputs.items():
        j = sim.index[eid]
        row = {}
        for attr in attrs:
            if attr not in vectors:
                vectors[attr] = sim._vector(attr)
                if vectors[attr] is None:
                    raise KeyError(f"{type(sim).__name__} has no output {attr!r}")
            row[attr] = vectors[attr][j].item()
        data[eid] = row
    return data
