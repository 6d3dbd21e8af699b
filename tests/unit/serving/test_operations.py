"""The operator's views without a service: offsets read from a checkpoint's files, lag per partition."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, job, op

from core.settings import Settings
from orchestration.runs import (
    ARCHIVE_JOB,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    REFRESH_JOB,
    RunHistory,
)
from serving.operations import (
    OperationsSources,
    PartitionLag,
    PartitionOffsets,
    TopicMessage,
    TopicOverview,
    dead_letters_by_hour,
    hour_starts,
    lag_rows,
    partition_sizes,
    records_between,
    timestamps_by_bisection,
)
from serving.operations_page import (
    ALL_REASONS,
    OperationsPage,
    batches_html,
    hourly_html,
    lag_chart_svg,
    lag_html,
    letters_html,
    messages_html,
    reasons_html,
    runs_html,
    topics_html,
)
from serving.profiles import DeadLetterRow, DeadLetterTally, counts_by_reason
from stores.speed_views import StreamBatch


def test_lag_is_the_distance_to_the_end_of_each_partition() -> None:
    partitions = [PartitionOffsets(0, 0, 100), PartitionOffsets(1, 40, 50)]
    rows = lag_rows(partitions, {0: 90}, None)
    assert [(r.partition, r.speed, r.speed_lag, r.archive_lag) for r in rows] == [
        (0, 90, 10, None),
        (1, 0, 50, None),
    ]
    assert partitions[1].records == 10


def test_lag_in_seconds_is_how_long_the_oldest_record_not_committed_has_waited() -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    partitions = [PartitionOffsets(0, 0, 100), PartitionOffsets(1, 40, 50), PartitionOffsets(2, 0, 7)]
    asked: list[dict[int, int]] = []

    def waiting_since(positions: dict[int, int]) -> dict[int, datetime]:
        asked.append(positions)
        return {0: now - timedelta(seconds=42)}  # partition 1's record did not arrive in time

    rows = lag_rows(partitions, {0: 90, 2: 7}, None, waiting_since, now)
    # Partition 1 was never consumed, and its records before 40 have expired: it waits from 40.
    assert asked == [{0: 90, 1: 40}]
    assert [(r.partition, r.speed_lag_s, r.archive_lag_s) for r in rows] == [
        (0, 42.0, None), (1, None, None), (2, 0.0, None),
    ]  # fmt: skip


def log_dir(topics: dict[str, dict[int, int]], error_code: int = 0, moving: bool = False) -> dict:
    """One log directory of a ``describe_log_dirs`` answer: topic -> partition -> bytes."""
    return {
        "error_code": error_code,
        "log_dir": "/var/kafka",
        "topics": [
            {
                "name": name,
                "partitions": [
                    {"partition_index": p, "partition_size": size, "offset_lag": 0, "is_future_key": moving}
                    for p, size in partitions.items()
                ],
            }
            for name, partitions in topics.items()
        ],
    }


def test_a_partition_size_on_disk_sums_its_replicas_and_leaves_out_failed_or_moving_logs() -> None:
    answer = [
        {"broker": 1, "log_dirs": [log_dir({"p": {0: 100, 1: 50}})]},
        {"broker": 2, "log_dirs": [log_dir({"p": {0: 100}}), log_dir({"p": {1: 999}}, error_code=57)]},
        {"broker": 3, "log_dirs": [log_dir({"p": {1: 50}}), log_dir({"p": {1: 50}}, moving=True)]},
    ]
    assert partition_sizes(answer) == {("p", 0): 200, ("p", 1): 100}


def test_a_topic_rate_and_size_add_up_its_partitions() -> None:
    busy = PartitionOffsets(0, 0, 900, recent=600, size_bytes=2_000)
    quiet = PartitionOffsets(1, 0, 10, recent=300)
    topic = TopicOverview("users", [busy, quiet], None)
    assert (topic.rate_per_s, topic.size_bytes) == (3.0, 2_000)
    assert TopicOverview("p", [PartitionOffsets(0, 0, 0)], None).size_bytes is None
    page = topics_html([topic])
    assert "users: 3 records/s over the last 5 min, 2.0 kB on disk" in page
    assert '<td class="number">600</td><td class="number">2.0 kB</td>' in page


def test_a_records_timestamp_is_found_by_bisecting_the_first_offsets_at_moments() -> None:
    now = 1_765_000_000_000
    stamps = {  # partition -> each offset's timestamp (ms), as the broker's time index holds them
        0: [now - 7 * 86_400_000, now - 3_600_000, now - 3_600_000, now - 2_500, now - 1],
        1: [now - 40_000, now + 90_000],  # the second stamped by a clock ahead
    }
    calls: list[dict[int, int]] = []

    def first_offsets_at(moments: dict[int, int]) -> dict[int, int | None]:
        calls.append(moments)
        return {p: next((i for i, t in enumerate(stamps[p]) if t >= m), None) for p, m in moments.items()}

    asked = {0: 0, 1: 1}
    found = timestamps_by_bisection(asked, first_offsets_at, now)
    assert found[1] == now  # stamped after now (a clock ahead): counted as now
    assert 0 <= stamps[0][0] - found[0] <= 0.01 * 7 * 86_400_000  # a week old: to 1% of its age
    for offset in (1, 2, 3, 4):
        stamp = timestamps_by_bisection({0: offset}, first_offsets_at, now)[0]
        assert 0 <= stamps[0][offset] - stamp <= max(1_000, (now - stamps[0][offset]) // 100), offset
    assert 0 <= stamps[1][0] - timestamps_by_bisection({1: 0}, first_offsets_at, now)[1] <= 1_000
    calls.clear()
    timestamps_by_bisection({0: 3, 1: 0}, first_offsets_at, now)
    assert len(calls) <= 2 * 16  # a few calls, each for every partition at once
    # An offset before the partition's first record (expired) is left out.
    assert timestamps_by_bisection({0: -1}, first_offsets_at, now) == {}


def test_dead_letters_per_hour_add_the_layers_tallies_and_the_records_of_the_producers_topic() -> None:
    starts = hour_starts(datetime(2026, 12, 6, 14, 35, tzinfo=UTC), 3)
    assert starts == [datetime(2026, 12, 6, h, tzinfo=UTC) for h in (12, 13, 14)]
    # Offsets of two partitions at each hour's start, then now.
    offsets = [{0: 0, 1: 5}, {0: 2, 1: 5}, {0: 2, 1: 5}, {0: 3, 1: 9}]
    producer = dict(zip(starts, records_between(offsets), strict=True))
    assert producer == {starts[0]: 2, starts[1]: 0, starts[2]: 5}
    tallies = [
        DeadLetterTally("speed", "not JSON", starts[2], 4),
        DeadLetterTally("speed", "too large", starts[2], 1),
        DeadLetterTally("batch", "not JSON", starts[0], 3),
        DeadLetterTally("speed", "not JSON", datetime(2026, 12, 1, tzinfo=UTC), 7),  # before the hours shown
        DeadLetterTally("speed", "not JSON", None, 2),  # stored before hours were recorded
    ]
    hours = dead_letters_by_hour(tallies, producer, starts)
    assert [(h.hour.hour, h.by_source, h.total) for h in hours] == [
        (14, {"producer": 5, "speed": 5, "batch": 0}, 10),
        (12, {"producer": 2, "speed": 0, "batch": 3}, 5),
    ]
    # The counts by reason take every hour.
    assert counts_by_reason(tallies) == [
        ("speed", "not JSON", 13), ("batch", "not JSON", 3), ("speed", "too large", 1),
    ]  # fmt: skip
    page = hourly_html(hours)
    numbers = "".join(f'<td class="number">{n}</td>' for n in (5, 5, 0, 10))
    assert f'<tr><td class="">2026-12-06 14:00</td>{numbers}</tr>' in page
    assert "No dead letters in the last 24 hours" in hourly_html([])


def test_the_operations_page_parts_are_escaped_tables_that_say_what_is_missing() -> None:
    topics = topics_html(
        [TopicOverview("t<1>", [PartitionOffsets(0, 2, 12)], 604_800_000), TopicOverview("t.dlq", None, None)]
    )
    assert "t&lt;1&gt;" in topics and "<1>" not in topics and "7 days" in topics
    assert "not created yet" in topics
    lag = lag_html(lag_rows([PartitionOffsets(0, 0, 12)], {0: 10}, None))
    assert '<td class="number">2</td>' in lag and "not committed a micro-batch yet" in lag
    letter = DeadLetterRow("speed", "not <JSON>", "t", 0, 5, None, None, "a<b")
    assert "not &lt;JSON&gt;" in letters_html([letter]) and "a&lt;b" in letters_html([letter])
    assert "No dead letters" in letters_html([]) and "No dead letters" in reasons_html([])
    batch = StreamBatch(7, datetime(2026, 12, 6, 12, tzinfo=UTC), 100, 90, 8, 1, 1, 1_340, None, 3)
    assert batches_html([batch]).count("<tr>") == 2 and "1.3 s" in batches_html([batch])
    assert "No micro-batch yet" in batches_html([])
    assert "42 s" in lag_html([PartitionLag(0, 12, 10, None, 42.4, None)])
    message = TopicMessage(3, 41, datetime(2026, 12, 6, 12, tzinfo=UTC), "k<1>", "a<b", {"h": "v"})
    assert "k&lt;1&gt;" in messages_html([message]) and "h: v" in messages_html([message])
    assert "No records" in messages_html([])


def test_the_batch_layers_runs_come_from_dagsters_own_storage_newest_first(tmp_path: Path) -> None:
    """Runs of jobs named like the batch layer's, executed on a Dagster home of the test, read back
    through ``RunHistory`` as the operations page reads them (other jobs left out)."""
    home = tmp_path / "dagster"
    assert RunHistory(home).recent(5) == []  # no home yet: no run, no error
    home.mkdir()

    @op
    def works() -> None:
        pass

    @op
    def fails() -> None:
        raise RuntimeError("the store is down")

    @job(name=ARCHIVE_JOB)
    def archive() -> None:
        works()

    @job(name=REFRESH_JOB)
    def refresh() -> None:
        fails()

    @job(name="something_else")
    def other() -> None:
        works()

    instance = DagsterInstance.from_config(str(home))
    try:
        archive.execute_in_process(instance=instance)
        refresh.execute_in_process(
            instance=instance,
            raise_on_error=False,
            tags={PARTITION_RANGE_START_TAG: "2026-12-05", PARTITION_RANGE_END_TAG: "2026-12-06"},
        )
        other.execute_in_process(instance=instance)
    finally:
        instance.dispose()

    with RunHistory(home) as history:
        runs = history.recent(5)
    assert [(r.job, r.status, r.days) for r in runs] == [
        (REFRESH_JOB, "FAILURE", "2026-12-05..2026-12-06"),
        (ARCHIVE_JOB, "SUCCESS", None),
    ]
    assert all(r.duration_s is not None and r.duration_s >= 0 for r in runs)
    page = runs_html(runs, "http://dagster.example:3000/")
    assert f'href="http://dagster.example:3000/runs/{runs[0].run_id}"' in page and "FAILURE" in page
    assert "No batch-layer run" in runs_html([], "http://x")

    # The same from the CLI, for scripts.
    result = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", "runs", "--json"],
        env={**os.environ, "USERPULSE_PATHS__DAGSTER_HOME": str(home),
             "USERPULSE_SERVING__DAGSTER_UI_URL": "http://dagster.example:3000"},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    listed = json.loads(result.stdout)
    assert [(r["job"], r["status"], r["days"]) for r in listed] == [(r.job, r.status, r.days) for r in runs]
    assert listed[0]["url"] == f"http://dagster.example:3000/runs/{runs[0].run_id}"


def test_the_lag_chart_draws_the_records_left_after_each_micro_batch_oldest_on_the_left() -> None:
    start = datetime(2026, 12, 6, 12, tzinfo=UTC)

    def batch(seconds: int, lag: int | None) -> StreamBatch:
        return StreamBatch(seconds, start + timedelta(seconds=seconds), 10, 10, 0, 0, 0, 100, None, lag)

    svg = lag_chart_svg([batch(20, 0), batch(10, 50), batch(15, None), batch(0, 100)])  # newest first
    points = svg.split('points="')[1].split('"')[0].split()
    assert points == ["0.0,10.0", "320.0,65.0", "640.0,120.0"]  # 100 at the top, 0 at the bottom
    assert "last 3 micro-batches" in svg and "12:00:00 to 12:00:20" in svg
    assert "needs two micro-batches" in lag_chart_svg([batch(0, 5), batch(1, None)])
    assert batches_html([batch(s, 1) for s in range(30)]).count("<tr>") == 1 + 10  # the newest 10


class SlowDeadLetters:
    """Dead letters whose first count waits for the test: a read in progress when a reason is picked."""

    def __init__(self) -> None:
        self.first_read_may_end = threading.Event()
        self.reasons_asked: list[str | None] = []

    def dead_letter_tallies(self) -> list[DeadLetterTally]:
        if not self.reasons_asked:
            self.first_read_may_end.wait(timeout=10)
        return [DeadLetterTally("speed", "not JSON", None, 1)]

    def latest_dead_letters(self, limit: int, reason: str | None = None) -> list[DeadLetterRow]:
        self.reasons_asked.append(reason)
        return []


class NoTopics:
    def overview(self) -> list[TopicOverview]:
        return []

    def appended_per_hour(self, topic: str, starts: list[datetime]) -> dict[datetime, int]:
        return {}


def test_a_reason_picked_while_the_dead_letters_are_read_is_read_right_after() -> None:
    documents = SlowDeadLetters()
    sources = OperationsSources(NoTopics(), documents, None, None)  # type: ignore[arg-type]
    page = OperationsPage(Settings(), sources)

    async def pick_during_a_read() -> None:
        reading = asyncio.create_task(page.refresh_dead_letters(force=True))
        await asyncio.sleep(0.2)  # the first read waits in its thread
        page.param["reason"].objects = [ALL_REASONS, "not JSON"]
        page.reason = "not JSON"  # its watcher returns at once: a read is in progress
        await asyncio.sleep(0.2)
        documents.first_read_may_end.set()
        await reading

    asyncio.run(pick_during_a_read())
    assert documents.reasons_asked == [None, "not JSON"]
