"""Figures and tables that do not mislead: plain axes with units, bars from zero, the last interval drawn,
enough digits for a violation, valid Markdown. Synthetic inputs, no runs."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dercosim.analysis.plots import step_post  # noqa: E402
from dercosim.analysis.validate import visibly  # noqa: E402


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every figure a function saves (drawn first, so tick labels and offsets are computed)."""
    figures: list = []
    real = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):  # noqa: ANN001, ANN202
        fig.canvas.draw()
        figures.append(fig)
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def test_step_curves_draw_the_last_interval() -> None:
    fig, ax = plt.subplots()
    t = pd.date_range("2016-06-01", periods=4, freq="30min")
    (line,) = step_post(ax, t, [1.0, 2.0, 3.0, 4.0], pd.Timedelta(minutes=30))
    x = pd.Timestamp(line.get_xdata()[-1])
    assert x == pd.Timestamp("2016-06-01 02:00") and line.get_ydata()[-1] == 4.0  # the 01:30 interval ends at 02:00
    plt.close(fig)


@pytest.mark.parametrize("value", [0.8999996, 0.89999999991, 1.1000004, 0.9, 0.93456])
def test_a_voltage_prints_on_its_side_of_the_limits(value: float) -> None:
    shown = float(visibly(value, 0.9, 1.1))
    assert (shown < 0.9) == (value < 0.9) and (shown > 1.1) == (value > 1.1) and (shown == 0.9) == (value == 0.9)
    assert visibly(0.93456, 0.9, 1.1) == "0.9346"  # four digits when they suffice


def test_the_fleet_table_is_valid_markdown() -> None:
    from dercosim.studies.fleet import markdown

    row = {k: 0.5 for k in ("bill_total", "bill_reduction_vs_s0", "market_revenue", "imbalance_cost", "total_revenue",
                            "self_consumed_share", "minutes_not_exporting_share", "fleet_supplied_share",
                            "self_supplied_minutes_share", "mean_abs_deviation_of_committed", "v_min_pu",
                            "minutes_outside_limits", "paper_total_revenue_month", "paper_self_consumed_share",
                            "paper_minutes_not_exporting_share")}
    text = markdown(pd.DataFrame([{"scenario": "s4", **row}]), 86400)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in rows]  # unescaped pipes only
    assert len(rows) == 3 and len(set(cells)) == 1, cells


def test_sweep_plots_have_plain_axes_and_the_currency(tmp_path: Path, saved: list) -> None:
    from dercosim.studies.sweep import plot_sweep

    table = pd.DataFrame({"status": "ok", "contract.interval_s": [60, 300, 900],
                          "wholesale_revenue": [2793.1, 2793.4, 2792.9], "self_consumed_share": [0.5, 0.51, 0.49]})
    plot_sweep(table, ["contract.interval_s"], tmp_path, currency="GBP")
    (fig,) = saved
    titles = [ax.get_title() for ax in fig.axes]
    assert "wholesale_revenue (GBP)" in titles and "self_consumed_share (%)" in titles
    money = fig.axes[titles.index("wholesale_revenue (GBP)")]
    assert money.yaxis.get_major_formatter().get_offset() == ""  # no "+2.793e3" above the axis
    shares = fig.axes[titles.index("self_consumed_share (%)")]
    assert shares.get_ylim()[1] > 50  # in percent


def test_value_stream_bars_start_at_zero(tmp_path: Path, saved: list) -> None:
    from dercosim.studies.value_stacking import VARIANTS, StreamsStudy, plot_streams

    table = pd.DataFrame({"variant": list(VARIANTS), "central_cost": np.linspace(900.0, 910.0, len(VARIANTS)),
                          "central_contribution_pct": np.linspace(0, 30, len(VARIANTS))})
    plot_streams({"tou": StreamsStudy(table=table, currency="AUD")}, tmp_path / "streams.png")
    (fig,) = saved
    assert fig.axes[0].get_ylim()[0] <= 0.0 < fig.axes[0].get_ylim()[1]


def test_the_price_maker_study_draws_its_figure(tmp_path: Path) -> None:
    from dercosim.studies.sharing import plot_price_maker

    table = pd.DataFrame({"units": [2, 10], "central_cost": [-120.0, -530.0], "central_s": [0.1, 0.8],
                          "admm_cost": [-119.9, -529.0], "admm_s": [0.5, 3.0],
                          "rolling_cost": [-119.5, -528.0], "rolling_s": [0.4, 2.0]})
    path = plot_price_maker(table, tmp_path / "price_maker.png")
    assert path.stat().st_size > 10_000
