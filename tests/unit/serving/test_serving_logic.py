"""Pure logic of the serving side: the cutoff split, merging partials, masking, headline figures."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from core.settings import BatchLayerSettings
from serving.charts import breakdown_html
from serving.dashboard import (
    breakdown_frame,
    format_count,
    freshness_markdown,
    headline_html,
    latest_frame,
    latest_html,
    rate_label,
)
from serving.profiles import (
    ProfileRow,
    latest_profiles_query,
    mask_email,
    mask_name,
    mask_phone,
    mask_raw_value,
    profile_row,
)
from serving.snapshot import (
    Filters,
    Headline,
    SharedSnapshots,
    Snapshot,
    headline_of,
    per_minute,
    time_range_of,
    timeline_range_of,
)
from serving.views import (
    DimensionView,
    Freshness,
    Partial,
    TimeRange,
    ValueFigures,
    WindowCount,
    correction_partials,
    merge_partials,
)
from stores.batch_views import BatchCurrent, ErasureCorrection

CUTOFF = datetime(2026, 1, 1, 10, 2, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_merge_sums_counts_and_ages_and_keeps_extremes_per_value() -> None:
    batch = [Partial("FR", 3, 90, 20, 40), Partial("ES", 1, 50, 50, 50)]
    speed = [Partial("FR", 2, 70, 19, 51), Partial("FR", 1, 30, 30, 30), Partial("DE", 4, 100, 21, 29)]
    merged = merge_partials(batch, speed)
    assert merged == [
        ValueFigures("FR", 6, 190, 19, 51, batch_profiles=3, speed_profiles=3),
        ValueFigures("DE", 4, 100, 21, 29, batch_profiles=0, speed_profiles=4),
        ValueFigures("ES", 1, 50, 50, 50, batch_profiles=1, speed_profiles=0),
    ]
    assert merged[0].average_age == pytest.approx(190 / 6)


def test_merge_of_nothing_is_empty_and_has_no_average() -> None:
    assert merge_partials([], []) == []
    assert ValueFigures("x", 0, 0, None, None, 0, 0).average_age is None


def ages(counts: dict[int, int]) -> Callable[[], Counter[int]]:
    return lambda: Counter(counts)


def test_when_a_profile_left_a_value_its_extremes_come_from_the_ages() -> None:
    # The batch view counts FR aged 20, 30 and 40; the speed layer moved the 20-year-old to ES, and an
    # erasure took the 40-year-old: FR is left with one profile of 30.
    batch = [Partial("FR", 3, 90, 20, 40, ages=ages({20: 1, 30: 1, 40: 1}))]
    moved = [
        Partial("FR", -1, -20, None, None, removals=1, ages=ages({20: -1})),
        Partial("ES", 1, 20, 20, 20),
    ]
    erased = ErasureCorrection(1, 5, CUTOFF, 40, {"country": "FR", "gender": "male"})
    corrections = [row for _, row in correction_partials([erased], "country", TimeRange())]

    merged = merge_partials(batch, moved + corrections)

    assert merged == [
        ValueFigures("ES", 1, 20, 20, 20, batch_profiles=0, speed_profiles=1),
        ValueFigures("FR", 1, 30, 30, 30, batch_profiles=3, speed_profiles=-2),
    ]


def test_a_value_left_with_nobody_disappears() -> None:
    speed = [Partial("ES", 1, 50, 50, 50)]
    erased = ErasureCorrection(1, 5, CUTOFF, 50, {"country": "ES"})

    merged = merge_partials(
        [], speed + [row for _, row in correction_partials([erased], "country", TimeRange())]
    )

    assert merged == []


def test_corrections_apply_to_their_dimension_and_time_range_only() -> None:
    erased = ErasureCorrection(1, 5, CUTOFF, 50, {"country": "ES"})

    assert correction_partials([erased], "gender", TimeRange()) == []
    assert correction_partials([erased], "country", TimeRange(start=CUTOFF + MINUTE)) == []
    assert [
        start for start, _ in correction_partials([erased], "country", TimeRange(end=CUTOFF + MINUTE))
    ] == [CUTOFF]


@pytest.mark.parametrize(
    ("email", "masked"),
    [("jane.doe@example.com", "j***@example.com"), ("x@y.org", "x***@y.org"), ("", "***"), (None, "***")],
)
def test_mask_email_keeps_the_first_letter_and_the_domain(email: str | None, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize(("phone", "masked"), [("(555) 123-4567", "***67"), ("0-1", "***01"), ("7", "***")])
def test_mask_phone_keeps_the_last_two_digits(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


def test_profile_row_shows_no_direct_identifier() -> None:
    document = {
        "_id": "u-1",
        "fetched_at": CUTOFF,
        "source": "randomuser",
        "user": {
            "name": {"first": "Jane", "last": "Doe"},
            "email": "jane.doe@example.com",
            "phone": "(555) 123-4567",
            "gender": "female",
            "dob": {"age": 33},
            "location": {"country": "France"},
            "nat": "FR",
        },
    }
    row = profile_row(document)
    assert (row.name, row.email, row.phone) == (mask_name("Jane", "Doe"), "j***@example.com", "***67")
    assert row.name == "J. D."
    assert "Jane" not in repr(row) and "Doe" not in repr(row) and "4567" not in repr(row)


def test_latest_profiles_query_narrows_by_country_gender_and_time() -> None:
    assert latest_profiles_query() == {}
    assert latest_profiles_query("France", "female", TimeRange(CUTOFF, CUTOFF + MINUTE)) == {
        "user.location.country": "France",
        "user.gender": "female",
        "fetched_at": {"$gte": CUTOFF, "$lt": CUTOFF + MINUTE},
    }


def test_time_range_of_the_last_minutes_starts_on_a_window_boundary() -> None:
    now = datetime(2026, 1, 1, 10, 30, 42, tzinfo=UTC)
    assert time_range_of(Filters(), now, 60) == TimeRange()
    fifteen_minutes_ago = datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert time_range_of(Filters(minutes=15), now, 60) == TimeRange(start=fifteen_minutes_ago)


def test_the_timeline_of_all_time_ends_at_the_newest_window_with_data() -> None:
    now = datetime(2026, 1, 1, 10, 30, 42, tzinfo=UTC)
    two_hours_ago = datetime(2026, 1, 1, 8, 30, tzinfo=UTC)
    assert timeline_range_of(Filters(), now, two_hours_ago, 60, 60) == TimeRange(
        start=datetime(2026, 1, 1, 7, 31, tzinfo=UTC), end=datetime(2026, 1, 1, 8, 31, tzinfo=UTC)
    )
    # No data yet: the last hour of the clock.
    assert timeline_range_of(Filters(), now, None, 60, 60) == TimeRange(
        start=datetime(2026, 1, 1, 9, 31, tzinfo=UTC), end=datetime(2026, 1, 1, 10, 31, tzinfo=UTC)
    )
    # A time range shows exactly its windows, wherever the data is.
    assert timeline_range_of(Filters(minutes=15), now, two_hours_ago, 60, 60) == time_range_of(
        Filters(minutes=15), now, 60
    )


def test_per_minute_uses_the_newest_window_that_has_ended() -> None:
    now = datetime(2026, 1, 1, 10, 3, 30, tzinfo=UTC)
    timeline = [
        WindowCount(datetime(2026, 1, 1, 10, 1, tzinfo=UTC), 120, "batch"),
        WindowCount(datetime(2026, 1, 1, 10, 2, tzinfo=UTC), 90, "speed"),
        WindowCount(datetime(2026, 1, 1, 10, 3, tzinfo=UTC), 40, "speed"),  # still filling
    ]
    assert per_minute(timeline, now, 60) == (90, timeline[1].window_start)
    assert per_minute(timeline, now, 30) == (80, timeline[2].window_start)  # 40 profiles in a 30 s window


def test_per_minute_is_defined_whenever_there_is_data() -> None:
    now = datetime(2026, 1, 1, 10, 3, 30, tzinfo=UTC)
    current = WindowCount(datetime(2026, 1, 1, 10, 3, tzinfo=UTC), 40, "speed")
    # Only the current window: its 40 profiles in the 30 s that have passed.
    assert per_minute([current], now, 60) == (80, current.window_start)
    # Data of long ago: the newest window it has, named.
    old = WindowCount(datetime(2026, 1, 1, 7, 0, tzinfo=UTC), 12, "batch")
    assert per_minute([old], now, 60) == (12, old.window_start)
    assert per_minute([], now, 60) is None
    assert rate_label(old.window_start) == "Profiles per minute (07:00 UTC)"


def _view(dimension: str, values: list[ValueFigures]) -> DimensionView:
    return DimensionView(dimension, values, Freshness(None, None, None, CUTOFF))


def _figures(value: str, profiles: int, age_sum: int) -> ValueFigures:
    return ValueFigures(value, profiles, age_sum, None, None, profiles, 0)


BREAKDOWNS = {
    "age_band": _view("age_band", [_figures("25-34", 3, 90), _figures("35-44", 1, 40)]),
    "country": _view("country", [_figures("France", 3, 100), _figures("Spain", 1, 30)]),
    "gender": _view("gender", [_figures("female", 2, 60), _figures("male", 2, 70)]),
}


def test_headline_of_all_profiles() -> None:
    assert headline_of(BREAKDOWNS, Filters(), (12.0, CUTOFF), 5) == Headline(4, 32.5, 2, 12.0, 5, CUTOFF)


def test_headline_of_a_segment_follows_its_row() -> None:
    assert headline_of(BREAKDOWNS, Filters(country="France"), None, 0) == Headline(3, 100 / 3, 1, None, 0)
    assert headline_of(BREAKDOWNS, Filters(gender="male"), None, 0) == Headline(2, 35.0, 2, None, 0)
    assert headline_of(BREAKDOWNS, Filters(country="Peru"), None, None) == Headline(0, None, 0, None, None)


def test_the_freshness_panel_says_when_the_next_batch_run_is_due() -> None:
    taken_at = datetime(2026, 1, 1, 10, 7, 12, tzinfo=UTC)
    every_quarter = BatchLayerSettings(archive_schedule="*/15 * * * *")
    empty = Snapshot(Filters(), taken_at, None, {}, [], [], Freshness(None, None, None, taken_at))
    text = freshness_markdown(empty, every_quarter)
    assert "first one follows the next archive run" in text
    assert "**Next batch run**: archive due 2026-01-01 10:15:00 UTC (schedule `*/15 * * * *`" in text

    view = BatchCurrent(3, CUTOFF, 10, CUTOFF, 4, {0: 5}, 0)
    batched = Snapshot(Filters(), taken_at, None, {}, [], [], Freshness(view, None, None, taken_at))
    text = freshness_markdown(batched, BatchLayerSettings(archive_schedule="* * * * *"))
    assert "complete up to **2026-01-01 10:02:00 UTC**" in text
    assert "archive due 2026-01-01 10:08:00 UTC" in text

    # The demo's trigger: no cron, the sensor starts an archive once the batch layer is free.
    on_new_offsets = BatchLayerSettings(archive_trigger="new_offsets", new_offsets_check_s=10)
    text = freshness_markdown(batched, on_new_offsets)
    assert "**Next batch run**: archive as soon as new records wait in Kafka" in text
    assert "every 10 s" in text and "due" not in text


def test_headline_html_formats_figures_and_marks_the_missing() -> None:
    rendered = headline_html(Headline(12345, 41.25, 3, None, 0))
    assert 'data-testid="kpi-profiles"' in rendered and "12,345" in rendered and "41.2" in rendered
    assert format_count(None) == "—"


def test_breakdown_frame_keeps_the_top_values_and_sums_the_rest_as_other() -> None:
    view = _view("country", [_figures("A", 5, 100), _figures("B", 3, 60), _figures("C", 2, 80)])
    frame = breakdown_frame(view, top=1)
    assert frame.to_dict("records") == [
        {"label": "A", "batch": 5, "speed": 0, "profiles": 5, "average_age": 20.0},
        {"label": "other", "batch": 5, "speed": 0, "profiles": 5, "average_age": 28.0},
    ]


def test_breakdown_frame_orders_age_bands_youngest_first() -> None:
    view = _view("age_band", [_figures("65+", 9, 600), _figures("18-24", 1, 20), _figures("35-44", 2, 80)])
    assert list(breakdown_frame(view, top=1)["label"]) == ["18-24", "35-44", "65+"]


def test_shared_snapshots_keep_the_newest_per_filters_and_say_how_fresh() -> None:
    taken = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)

    def snapshot(filters: Filters, at: datetime) -> Snapshot:
        return Snapshot(filters, at, None, {}, [], [], None)

    shared = SharedSnapshots()
    france = Filters(country="France")
    assert shared.newest(Filters()) is None
    shared.keep(snapshot(Filters(), taken))
    shared.keep(snapshot(Filters(), taken - MINUTE))  # an older read finishing late does not win
    shared.keep(snapshot(france, taken + MINUTE))

    newest = shared.newest(Filters())
    assert newest is not None and newest.taken_at == taken
    assert shared.fresh(Filters(), taken + timedelta(seconds=2), 2.5) is newest
    assert shared.fresh(Filters(), taken + timedelta(seconds=3), 2.5) is None
    assert shared.fresh(Filters(minutes=15), taken, 2.5) is None
    kept = shared.newest(france)
    assert kept is not None and kept.filters == france


def test_a_breakdown_is_a_bar_list_with_each_layer_in_proportion() -> None:
    view = _view(
        "country",
        [
            ValueFigures("<France>", 40, 1600, None, None, 30, 10),
            ValueFigures("Spain", 20, 700, None, None, 20, 0),
        ],
    )
    rendered = breakdown_html(breakdown_frame(view, 15), "Profiles by country", "breakdown-country")

    assert 'data-testid="breakdown-country"' in rendered and "&lt;France&gt;" in rendered
    assert "<France>" not in rendered
    # The widest bar is the largest value: 30 batch + 10 speed of 40; Spain is half as wide, batch only.
    assert "width:75.00%" in rendered and "width:25.00%" in rendered and "width:50.00%" in rendered
    assert rendered.index("&lt;France&gt;") < rendered.index("Spain")
    assert "40 profiles (batch 30, speed 10), average age 40.0" in rendered
    empty = breakdown_html(breakdown_frame(_view("country", []), 15), "Profiles by country", "b")
    assert "No profiles yet" in empty


def test_the_latest_profiles_are_an_escaped_table_newest_first() -> None:
    rows = [
        ProfileRow("u1", CUTOFF + MINUTE, "J. <b>", "female", 31, "France", "FR", "j***@example.com", "***12",
                   "synthetic"),
        ProfileRow("u2", CUTOFF, "A. B.", None, None, None, None, "a***@example.com", "***34", "randomuser"),
    ]  # fmt: skip
    snapshot = Snapshot(Filters(), CUTOFF, None, {}, None, rows, None)
    rendered = latest_html(latest_frame(snapshot))

    assert 'data-testid="latest"' in rendered and rendered.count("<tr>") == 3  # the header and two rows
    assert "J. &lt;b&gt;" in rendered and "<b>" not in rendered
    assert rendered.index("10:03:00") < rendered.index("10:02:00")
    assert '<td class="age">31</td>' in rendered and '<td class="age"></td>' in rendered
    assert "None" not in rendered and "nan" not in rendered.lower()
    empty = latest_html(latest_frame(Snapshot(Filters(), CUTOFF, None, {}, None, [], None)))
    assert "No profiles yet" in empty and "<table" not in empty


def test_a_dead_letters_value_is_shown_with_its_direct_identifiers_masked() -> None:
    record = {
        "schema_version": 2,
        "user": {"name": {"first": "Jane", "last": "Doe"}, "email": "jane@x.org", "phone": "(555) 123-4567",
                 "location": {"street": {"number": 12, "name": "Elm"}, "country": "France"},
                 "gender": "female"},
        "sealed": "QUJD",
        "fetched_at": "2026-12-06T10:00:00+00:00",
    }  # fmt: skip
    shown = mask_raw_value(json.dumps(record).encode())
    assert (
        "Jane" not in shown and "jane@x.org" not in shown and "123-4567" not in shown and "Elm" not in shown
    )
    assert '"country": "France"' in shown and '"sealed": "QUJD"' in shown  # sealed stays sealed
    assert "2026-12-06T10:00:00+00:00" in shown  # dates are not phone numbers
    # Not JSON: e-mail addresses and phone-like digits are found in the text.
    assert mask_raw_value(b"from jane.doe@example.com, +1 (555) 123-4567") == "from j***@example.com, ***67"
    assert mask_raw_value(b"\xff\xfe not utf-8").endswith("not utf-8")
    assert mask_raw_value(None) == ""
    assert mask_raw_value(b"x" * 1000).endswith("…") and len(mask_raw_value(b"x" * 1000)) == 401
