"""The fleet scenarios of Couraud et al. 2022: one day is the first day of two (see ``test_prefix.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_prefix import BUNDLED, one_day_against_two


#: fleet scenarios whose mechanisms another one covers here: s3 is s2's central plant with the households in the
#: portfolio (the same aggregator, contract and MPC), uncoordinated is s4 without its contract
COVERED = {"fleet_market_s3", "fleet_market_uncoordinated"}


@pytest.mark.parametrize("name", sorted(n for n in BUNDLED if n.startswith("fleet_market") and n not in COVERED))
def test_one_day_is_the_first_day_of_two(tmp_path: Path, name: str):
    one_day_against_two(tmp_path, name)
