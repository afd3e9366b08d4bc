"""The analysts' dashboard: small-number suppression and charts that match their tables."""

from __future__ import annotations

import html
import re

from hypothesis import given
from hypothesis import strategies as st

from safer.web._dashboard import Chart, _chart, bucket_of, suppress


def test_primary_and_secondary_suppression() -> None:
    cells, total = suppress([0, 3, 12, 40])
    assert [c.shown for c in cells] == ["0", "<5", "x", "40"]
    assert total.shown == "55"
    cells, total = suppress([2, 2, 0])
    assert [c.shown for c in cells] == ["<5", "<5", "0"] and total.shown == "<5"
    cells, total = suppress([5, 9])
    assert [c.shown for c in cells] == ["5", "9"] and total.shown == "14"


@given(st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=6))
def test_no_count_below_five_is_ever_shown_or_derivable(counts: list[int]) -> None:
    cells, total = suppress(counts)
    for count, cell in zip(counts, cells, strict=True):
        if 0 < count < 5:
            assert cell.shown == "<5"
        if cell.value is not None:
            assert cell.value == count and (count == 0 or count >= 5)
    hidden = [c for c in cells if c.value is None]
    if total.value is not None and hidden:
        # the total minus the shown cells must not pin down a single hidden cell
        assert len(hidden) >= 2


def test_chart_svg_and_exports_carry_the_same_cells() -> None:
    from collections import Counter

    chart: Chart = _chart(
        "concern-type",
        "Decisions",
        "concern type",
        ("DISCLOSED", "WITHHELD"),
        {"NEGLECT": Counter({"DISCLOSED": 7, "WITHHELD": 2}), "MISSING": Counter({"WITHHELD": 9})},
    )
    rows = chart.csv_rows()
    assert rows[0] == ["concern type", "DISCLOSED", "WITHHELD", "total"]
    assert rows[1:] == [["MISSING", "0", "9", "9"], ["NEGLECT", "x", "<5", "9"]]
    svg = chart.svg()
    assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    shown = [html.unescape(s) for s in re.findall(r'data-shown="([^"]+)"', svg)]
    assert shown == ["9", "x", "<5"]  # zero cells draw nothing; the rest match the table


def test_buckets_are_uk_weeks_and_months() -> None:
    from datetime import UTC, datetime

    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # GMT in winter: still November
    assert bucket_of(late, "month") == "2026-11"
    summer = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)  # 00:30 BST on 1 July
    assert bucket_of(summer, "month") == "2026-07"
    assert bucket_of(summer, "week") == "2026-W27"
