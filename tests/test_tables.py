"""Whole columns between simulators (sims/tables.py): the arrays of ``column_inputs`` carry what the per-entity
dicts would have carried."""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
import numpy as np

from dercosim.sims.tables import TABLE_ATTR, TABLE_EID, gathered, tabled


@tabled
class _Receiver(mosaik_api_v3.Simulator):
    """Three entities; keeps what each step saw."""

    column_inputs = ("p_kw",)

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"E": {"public": True, "params": [], "attrs": ["p_kw", "q_kvar"]}}})
        self.index = {"a": 0, "b": 1, "c": 2}
        self.seen: list[Any] = []

    def create(self, num: int, model: str, **params: Any) -> list[dict]:
        return []

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        total, count = gathered(self, "p_kw")
        self.seen.append((total.copy(), count.copy(), {e: dict(a) for e, a in inputs.items()}))
        return time + 60

    def get_data(self, outputs: dict) -> dict:
        return {}


def _python_sums(per_entity: dict[str, list[Any]]) -> dict[str, float]:
    return {e: sum(values) for e, values in per_entity.items()}


def test_columns_arrive_summed_in_the_per_entity_order_and_counted() -> None:
    sim = _Receiver()
    sim.init("R-0")
    # two source tables: X gives p_kw to a and b (and q_kvar to c, which stays a per-entity input), Y gives p_kw
    # to b twice (two of its entities) and to c
    rows_x = [["p_kw", 0, "a", "p_kw", "X.x0"], ["p_kw", 1, "b", "p_kw", "X.x1"], ["q_kvar", 0, "c", "q_kvar", "X.x0"]]
    rows_y = [["p", 0, "b", "p_kw", "Y.y0"], ["p", 1, "b", "p_kw", "Y.y1"], ["p", 2, "c", "p_kw", "Y.y2"]]
    sim.create(1, "Table", columns={}, inputs={"X-0.__table__": rows_x, "Y-0.__table__": rows_y})
    x = {"p_kw": [0.1, 1e16], "q_kvar": [0.5]}
    y = {"p": [1.0, -1e16, None]}
    # a per-entity connection (not a table) to b as well: it comes first, as in mosaik's dict
    inputs = {"b": {"p_kw": {"Z.z0": 3.0}}, TABLE_EID: {TABLE_ATTR: {"X-0.__table__": x, "Y-0.__table__": y}}}
    sim.step(0, inputs, 0)
    total, count, rest = sim.seen[-1]
    expected = _python_sums({"a": [0.1], "b": [3.0, 1e16, 1.0, -1e16]})
    assert total[0] == expected["a"] and total[1] == expected["b"]  # the same rounding as Python's sum, in order
    assert np.isnan(total[2])  # None: no value
    assert count.tolist() == [1, 4, 1]
    assert rest == {"b": {}, "c": {"q_kvar": {"X.x0": 0.5}}}  # p_kw taken out; other attributes as before
    sim.step(60, {}, 0)  # nothing sent: zeros, no count
    total, count, _ = sim.seen[-1]
    assert total.tolist() == [0.0, 0.0, 0.0] and count.tolist() == [0, 0, 0]
