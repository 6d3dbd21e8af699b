"""The served dashboard in a real browser (Debian's Chromium driven by Playwright), on the real stores.

The stores are filled the way the layers fill them (their own store classes and document builders) with
synthetic profiles: some counted by a batch view, the rest by speed partials after its horizon.
The expected figures are recounted in plain Python from the profiles themselves. ``userpulse dashboard``
runs as a subprocess, as users run it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from playwright.sync_api import Browser, Page, sync_playwright

from core.aggregates import window_floor
from core.profile import profile_envelope
from core.settings import Settings
from infra.isolation import delete_topics
from ingestion.synthetic import SyntheticSource
from serving.dashboard import TIME_RANGES
from serving.profiles import profile_documents
from serving.snapshot import Filters, Snapshot, take_snapshot
from serving.views import ServingViews
from stores.batch_views import BatchCurrent, BatchViewStore
from stores.cassandra_schema import apply_schema
from stores.connections import cassandra_session, mongo_client, mongo_database
from stores.documents import dead_letter_document, mongo_raw_store, raw_document
from stores.speed_views import CassandraSpeedStore, partial_row
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.processes import cli_environment, free_port
from tests.integration.support.profiles_input import dimension_values, exact_age

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
REFRESH_PERIOD_S = 1.0
WINDOW = timedelta(minutes=1)
LATEST_ROWS = "[data-testid=latest] tbody tr"
FAILURE_SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-output" / "dashboard-failures"


@dataclass
class Profile:
    uuid: str
    fetched_at: datetime
    age: int
    values: dict[str, str]
    envelope: dict[str, Any]


def synthetic_profiles(seed: int, count: int, first_window: datetime, windows: int) -> list[Profile]:
    """Adult synthetic profiles spread over ``windows`` one-minute windows from ``first_window``."""
    profiles = []
    users = SyntheticSource(seed).next_batch(count * 2)
    for index, user in enumerate(users):
        fetched_at = first_window + (index % windows) * WINDOW + timedelta(seconds=index % 50)
        age = exact_age(datetime.fromisoformat(user["dob"]["date"]).date(), fetched_at.date())
        if age < 18:
            continue
        envelope = json.loads(profile_envelope(user, "synthetic", fetched_at).model_dump_json())
        profiles.append(
            Profile(user["login"]["uuid"], fetched_at, age, dimension_values(user, age), envelope)
        )
        if len(profiles) == count:
            break
    return profiles


def age_counts(profiles: list[Profile]) -> dict[tuple[str, datetime, str], Counter[int]]:
    """(dimension, window, value) -> profiles per age, recounted in plain Python."""
    totals: dict[tuple[str, datetime, str], Counter[int]] = {}
    for profile in profiles:
        for dimension, value in profile.values.items():
            totals.setdefault((dimension, window_floor(profile.fetched_at, 60), value), Counter())[
                profile.age
            ] += 1
    return totals


class Stores:
    """The test's keyspace and database, written with the layers' own store classes."""

    def __init__(self, settings: Settings) -> None:
        self.cluster, session = cassandra_session(settings)
        self.session = session
        self.database_name = settings.mongo.database
        keyspace = settings.cassandra.keyspace
        apply_schema(session, keyspace, settings.cassandra.keyspace_replication)
        self.speed = CassandraSpeedStore(session, keyspace, concurrency=32)
        self.batch = BatchViewStore(session, keyspace, concurrency=32)
        self.client = mongo_client(settings)
        database = mongo_database(self.client, settings)
        self.documents = profile_documents(database, settings)
        self.mongo = mongo_raw_store(database, settings)
        self.mongo.ensure_indexes()
        self.next_batch_id = 0

    def speed_batch(self, profiles: list[Profile]) -> None:
        """What one speed micro-batch writes for new profiles: raw documents, partials, its metrics."""
        batch_id, self.next_batch_id = self.next_batch_id, self.next_batch_id + 1
        self.mongo.insert_profiles(
            [
                raw_document(
                    {"uuid": p.uuid, "raw_value": json.dumps(p.envelope).encode(), "fetched_at": p.fetched_at,
                     "topic": "t", "partition": 0, "offset": index},
                    ingested_at=datetime.now(UTC),
                )
                for index, p in enumerate(profiles)
            ]
        )  # fmt: skip
        rows = age_counts(profiles)
        self.speed.write_partials([partial_row(key, ages, batch_id, 0, 60) for key, ages in rows.items()])
        self.speed.write_batch_metrics(
            {"job": "speed", "batch_id": batch_id, "processed_at": datetime.now(UTC),
             "input_rows": len(profiles), "new_profiles": len(profiles), "duplicates": 0, "dead_lettered": 0,
             "under_age": 0, "late_rows_dropped": 0, "duration_ms": 100,
             "max_event_time": max((p.fetched_at for p in profiles), default=None),
             "end_offsets": {0: batch_id + 1}, "windows": {window for _, window, _ in rows}}
        )  # fmt: skip

    def batch_view(self, profiles: list[Profile], horizon: int) -> None:
        """What a recomputation writes for ``profiles`` (the records of the speed batches up to
        ``horizon``), made current."""
        rows = age_counts(profiles)
        totals: dict[tuple[str, str], Counter[int]] = {}
        for (dimension, _window, value), ages in rows.items():
            totals.setdefault((dimension, value), Counter()).update(ages)

        def measures(ages: Counter[int]) -> dict[str, Any]:
            return {"profiles": sum(ages.values()), "age_sum": sum(a * n for a, n in ages.items()),
                    "age_min": min(ages), "age_max": max(ages), "ages": dict(ages)}  # fmt: skip

        self.batch.write_version(
            1,
            [{"dimension": d, "value": v, **measures(ages)} for (d, v), ages in totals.items()],
            [{"dimension": d, "window_start": w, "value": v, "window_end": w + WINDOW, **measures(ages)}
             for (d, w, v), ages in rows.items()],
        )  # fmt: skip
        newest = window_floor(max(p.fetched_at for p in profiles), 60)
        view = BatchCurrent(1, newest, len(profiles), datetime.now(UTC), horizon, {0: horizon + 1}, 0)
        assert self.batch.make_current(view, self.batch.erasure_seq())

    def dead_letters(self, count: int) -> None:
        self.mongo.insert_dead_letters(
            [
                dead_letter_document(
                    {"topic": "t", "partition": 1, "offset": offset, "kafka_timestamp": datetime.now(UTC),
                     "kafka_key": None, "raw_value": b"not json", "dead_letter_reason": "not JSON"},
                    job="speed",
                )
                for offset in range(count)
            ],
            stored_at=datetime.now(UTC),
        )  # fmt: skip

    def close(self) -> None:
        self.client.close()
        self.cluster.shutdown()


@pytest.fixture
def dashboard_settings(own_stores: Callable[..., Settings]) -> Settings:
    return own_stores("dash")


@pytest.fixture
def stores(dashboard_settings: Settings) -> Iterator[Stores]:
    stores = Stores(dashboard_settings)
    yield stores
    stores.close()


@pytest.fixture
def start_dashboard(
    dashboard_settings: Settings, stores: Stores, output_dir: Path
) -> Iterator[Callable[..., str]]:
    """Starts ``userpulse dashboard`` on the test's stores (refreshing every second); returns its URL.

    Keyword arguments are extra ``USERPULSE_*`` environment variables. Every dashboard started is
    stopped when the test ends.
    """
    processes: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(**environment: str) -> str:
        port = free_port()
        log = (output_dir / f"dashboard-{len(processes)}.log").open("w")
        logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "userpulse.cli", "dashboard"],
            env=cli_environment(
                dashboard_settings,
                USERPULSE_SERVING__PORT=str(port),
                USERPULSE_SERVING__REFRESH_PERIOD_S=str(REFRESH_PERIOD_S),
                **environment,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"the dashboard exited: see its log in {output_dir}"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return url
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 90 s"
                time.sleep(0.5)

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    for log in logs:
        log.close()


@pytest.fixture
def dashboard_url(start_dashboard: Callable[..., str]) -> str:
    return start_dashboard()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists() or shutil.which("chromium"), (
        "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


def headline(page: Page, name: str) -> str:
    return page.get_by_test_id(f"kpi-{name}").locator(".value").inner_text()


def wait_for_headline(page: Page, name: str, expected: str, timeout_s: float = 30) -> None:
    """Poll a headline figure until it shows ``expected``; on timeout, keep a screenshot of the page."""
    deadline = time.monotonic() + timeout_s
    while (shown := headline(page, name)) != expected:
        if time.monotonic() > deadline:
            FAILURE_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(FAILURE_SCREENSHOTS / f"{name}-{time.time():.0f}.png"), full_page=True)
            pytest.fail(
                f"{name}: shows {shown!r}, expected {expected!r} (screenshot in {FAILURE_SCREENSHOTS})"
            )
        page.wait_for_timeout(200)


def test_the_dashboard_shows_the_stores_figures_and_refreshes_without_reload(
    stores: Stores, dashboard_url: str, browser: Browser, output_dir: Path
) -> None:
    now = datetime.now(UTC)
    current = window_floor(now, 60)
    cutoff = current - 3 * WINDOW
    # 120 profiles in the batch view, 60 after its horizon (speed partials, two micro-batches); the speed
    # batch the view covers must not be counted again.
    batch_profiles = synthetic_profiles(1, 120, cutoff - 5 * WINDOW, 5)
    speed_profiles = synthetic_profiles(2, 60, cutoff, 3)
    stores.batch_view(batch_profiles, horizon=0)
    stores.speed_batch(batch_profiles[:10])  # batch 0: the batch view covers it; not counted again
    stores.speed_batch(speed_profiles[:30])
    stores.speed_batch(speed_profiles[30:])
    stores.dead_letters(3)
    counted = batch_profiles + speed_profiles
    average_age = sum(p.age for p in counted) / len(counted)
    countries = {p.values["country"] for p in counted}

    page = browser.new_page(viewport={"width": 1400, "height": 1900})
    failed_requests: list[str] = []
    page.on("requestfailed", lambda request: failed_requests.append(request.url))
    page.goto(dashboard_url)
    wait_for_headline(page, "profiles", f"{len(counted):,}")
    assert headline(page, "average-age") == f"{average_age:,.1f}"
    assert headline(page, "countries") == f"{len(countries):,}"
    assert headline(page, "dead-lettered") == "3"
    # The latest profiles are the speed ones, direct identifiers masked.
    page.locator(LATEST_ROWS).first.wait_for()
    table_text = page.get_by_test_id("latest").inner_text()
    newest = max(speed_profiles, key=lambda p: p.fetched_at)
    email = newest.envelope["user"]["email"]
    assert f"{email[0]}***@{email.rsplit('@', 1)[1]}" in table_text
    content = page.content() + table_text
    assert not [p for p in counted if p.envelope["user"]["email"] in content], "a plaintext e-mail is shown"
    page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)

    # New speed data appears after a refresh period, in the same page (no reload).
    page.evaluate("window.__same_page = true")
    arriving = synthetic_profiles(3, 25, current, 1)
    stores.speed_batch(arriving)
    wait_for_headline(page, "profiles", f"{len(counted) + len(arriving):,}", timeout_s=10 * REFRESH_PERIOD_S)
    assert page.evaluate("window.__same_page") is True

    # Paused, the figures stay; resumed, they catch up.
    page.get_by_role("button", name="Pause refresh").click()
    page.get_by_text("Paused: figures stay as they are.").wait_for()
    paused_more = synthetic_profiles(4, 5, current, 1)
    stores.speed_batch(paused_more)
    page.wait_for_timeout(int(4 * REFRESH_PERIOD_S * 1000))
    assert headline(page, "profiles") == f"{len(counted) + len(arriving):,}"
    page.get_by_role("button", name="Pause refresh").click()
    wait_for_headline(page, "profiles", f"{len(counted) + len(arriving) + len(paused_more):,}")
    assert not failed_requests, f"requests failed (offline resources?): {failed_requests}"
    page.screenshot(path=str(output_dir / "dashboard-after-refresh.png"), full_page=True)


def snapshot_of(stores: Stores, keyspace: str, minutes: int | None) -> Snapshot:
    views = ServingViews(stores.session, keyspace, "speed", concurrency=16)
    return take_snapshot(views, stores.documents, Filters(minutes=minutes), 60, 60, 500)


def test_every_part_honours_every_time_range_on_data_older_than_an_hour(
    stores: Stores, dashboard_settings: Settings
) -> None:
    """Every range the dashboard offers, on data that ends more than an hour ago, then on data that
    goes on until now: each part (headline, breakdowns, timeline, latest profiles) counts the same
    profiles, those of its range; all time charts the last hour of data, wherever that is."""
    keyspace = dashboard_settings.cassandra.keyspace
    current = window_floor(datetime.now(UTC), 60)
    batch_profiles = synthetic_profiles(11, 90, current - timedelta(hours=5), 10)  # 5 h ago
    speed_profiles = synthetic_profiles(12, 40, current - timedelta(hours=2), 4)  # 2 h ago
    stores.batch_view(batch_profiles, horizon=0)
    stores.speed_batch(batch_profiles[:5])  # batch 0: the batch view covers it
    stores.speed_batch(speed_profiles)
    old = batch_profiles + speed_profiles
    stored = {p.uuid for p in batch_profiles[:5] + speed_profiles}  # raw documents: what speed batches wrote

    def expect(profiles: list[Profile], minutes: int | None, charted: list[Profile]) -> None:
        snapshot = snapshot_of(stores, keyspace, minutes)
        assert snapshot.headline is not None and snapshot.timeline is not None and snapshot.latest is not None
        assert not snapshot.errors
        assert snapshot.headline.profiles == len(profiles), minutes
        for dimension, view in snapshot.breakdowns.items():
            assert Counter({v.value: v.profiles for v in view.values}) == Counter(
                p.values[dimension] for p in profiles
            ), (minutes, dimension)
        expected_windows = Counter(window_floor(p.fetched_at, 60) for p in charted)
        assert {w.window_start: w.profiles for w in snapshot.timeline} == expected_windows, minutes
        assert {row.uuid for row in snapshot.latest} == {p.uuid for p in profiles} & stored, minutes
        # Defined whenever the range holds data: profiles of the newest window, per minute.
        if profiles:
            newest = max(expected_windows)
            assert snapshot.headline.profiles_per_minute == expected_windows[newest], minutes
        else:
            assert snapshot.headline.profiles_per_minute is None, minutes

    # All time charts the last hour up to the newest window with data: the speed profiles' windows.
    for minutes in TIME_RANGES.values():
        in_range = old if minutes is None or minutes >= 24 * 60 else []
        expect(in_range, minutes, speed_profiles if minutes is None else in_range)

    recent = synthetic_profiles(13, 30, current - timedelta(minutes=5), 3)
    stores.speed_batch(recent)
    stored.update(p.uuid for p in recent)
    for minutes in TIME_RANGES.values():
        in_range = old + recent if minutes is None or minutes >= 24 * 60 else recent
        expect(in_range, minutes, recent if minutes is None else in_range)


def test_a_country_filter_narrows_the_headline_and_the_latest_profiles(
    stores: Stores, dashboard_url: str, browser: Browser
) -> None:
    profiles = synthetic_profiles(5, 80, window_floor(datetime.now(UTC), 60) - 2 * WINDOW, 2)
    stores.speed_batch(profiles)
    country = max(
        {p.values["country"] for p in profiles}, key=lambda c: sum(p.values["country"] == c for p in profiles)
    )
    in_country = [p for p in profiles if p.values["country"] == country]

    page = browser.new_page()
    page.goto(dashboard_url)
    wait_for_headline(page, "profiles", f"{len(profiles):,}")
    page.get_by_label("Country").select_option(country)
    wait_for_headline(page, "profiles", f"{len(in_country):,}")
    assert headline(page, "countries") == "1"
    assert headline(page, "average-age") == f"{sum(p.age for p in in_country) / len(in_country):,.1f}"
    # The table is a separate component: it may render a moment after the headline.
    rows = page.locator(LATEST_ROWS)
    deadline = time.monotonic() + 30
    while not (texts := rows.all_inner_texts()) or not all(country in text for text in texts):
        assert time.monotonic() < deadline, f"rows of other countries still shown: {texts}"
        page.wait_for_timeout(200)
    assert len(texts) == min(len(in_country), 20)


def test_a_store_that_fails_shows_its_error_in_place_and_the_rest_still_works(
    stores: Stores, start_dashboard: Callable[..., str], browser: Browser
) -> None:
    """MongoDB unreachable (a closed port): the latest profiles and the dead-letter count say so in place,
    the figures that come from Cassandra still show and refresh."""
    profiles = synthetic_profiles(6, 30, window_floor(datetime.now(UTC), 60) - WINDOW, 1)
    stores.speed_batch(profiles)
    url = start_dashboard(
        USERPULSE_MONGO__PORT=str(free_port()),
        USERPULSE_MONGO__SERVER_SELECTION_TIMEOUT_S="0.5",
    )
    page = browser.new_page()
    page.goto(url)
    wait_for_headline(page, "profiles", f"{len(profiles):,}")
    page.get_by_test_id("error-latest").wait_for()
    assert "Could not read dead_letters" in page.get_by_test_id("error-dead_letters").inner_text()
    assert headline(page, "dead-lettered") == "—"
    more = synthetic_profiles(7, 10, window_floor(datetime.now(UTC), 60), 1)
    stores.speed_batch(more)
    wait_for_headline(page, "profiles", f"{len(profiles) + len(more):,}")


def test_with_basic_auth_nothing_shows_before_the_login(
    stores: Stores, start_dashboard: Callable[..., str], browser: Browser
) -> None:
    stores.speed_batch(synthetic_profiles(8, 12, window_floor(datetime.now(UTC), 60) - WINDOW, 1))
    url = start_dashboard(
        USERPULSE_SERVING__BASIC_AUTH_USERNAME="analyst",
        USERPULSE_SERVING__BASIC_AUTH_PASSWORD="s3cret-for-the-test",
        USERPULSE_SERVING__COOKIE_SECRET="a-cookie-secret-for-the-test",
    )
    page = browser.new_page()
    page.goto(url + "operations")
    assert "/login" in page.url and page.get_by_test_id("topics").count() == 0
    page.goto(url)
    assert "/login" in page.url
    assert page.get_by_test_id("kpi-profiles").count() == 0
    page.fill("input[name=username]", "analyst")
    page.fill("input[name=password]", "wrong")
    page.locator("form").evaluate("form => form.submit()")
    page.wait_for_url("**/login?error=*")
    page.fill("input[name=username]", "analyst")
    page.fill("input[name=password]", "s3cret-for-the-test")
    page.locator("form").evaluate("form => form.submit()")
    wait_for_headline(page, "profiles", "12")


def wait_for_text(page: Page, test_id: str, expected: str, timeout_s: float = 30) -> str:
    """Poll a part of the page until its text holds ``expected``; its text."""
    deadline = time.monotonic() + timeout_s
    while expected not in (
        text := page.get_by_test_id(test_id).inner_text() if page.get_by_test_id(test_id).count() else ""
    ):
        assert time.monotonic() < deadline, f"{test_id}: {expected!r} not in {text!r}"
        page.wait_for_timeout(200)
    return text


def wait_until_equal(page: Page, read: Callable[[], object], expected: object, timeout_s: float = 30) -> None:
    """Poll ``read()`` until it returns ``expected``."""
    deadline = time.monotonic() + timeout_s
    while (found := read()) != expected:
        assert time.monotonic() < deadline, f"{found!r} != {expected!r}"
        page.wait_for_timeout(200)


def test_the_operations_page_shows_topics_progress_and_dead_letters_by_reason(
    stores: Stores,
    dashboard_settings: Settings,
    start_dashboard: Callable[..., str],
    browser: Browser,
    output_dir: Path,
) -> None:
    topic, dead_letters = dashboard_settings.kafka.profiles_topic, dashboard_settings.kafka.dead_letter_topic
    create_topic(dashboard_settings, topic, partitions=2)
    create_topic(dashboard_settings, dead_letters, partitions=1)
    try:
        producer = KafkaProducer(bootstrap_servers=dashboard_settings.kafka.bootstrap_servers, acks="all")
        for _ in range(5):
            producer.send(topic, value=b"{}", partition=0).get(timeout=30)
        producer.send(topic, value=b"{}", partition=1).get(timeout=30)
        for _ in range(2):  # the producer's own dead letters
            producer.send(dead_letters, value=b"{}").get(timeout=30)
        producer.close()
        stores.speed_batch(synthetic_profiles(9, 12, window_floor(datetime.now(UTC), 60) - WINDOW, 1))
        stores.dead_letters(3)  # "not JSON", from the speed layer
        stores.mongo.insert_dead_letters(
            [dead_letter_document(
                {"topic": topic, "partition": 1, "offset": 0, "kafka_timestamp": datetime.now(UTC),
                 "kafka_key": None, "raw_value": b'{"user": {"email": "jane.doe@example.com"}}',
                 "dead_letter_reason": "missing field: user.login.uuid"},
                job="batch",
            )],
            stored_at=datetime.now(UTC),
        )  # fmt: skip

        url = start_dashboard(
            USERPULSE_KAFKA__PROFILES_TOPIC=topic,
            USERPULSE_KAFKA__DEAD_LETTER_TOPIC=dead_letters,
            USERPULSE_SERVING__DEAD_LETTERS_REFRESH_S="3",
            USERPULSE_PATHS__DAGSTER_HOME=str(output_dir / "no-dagster-home"),
        )
        page = browser.new_page()
        page.goto(url)
        page.get_by_role("link", name="Operations: topics, lag, dead letters →").click()
        page.wait_for_url("**/operations")

        wait_for_text(page, "topics", dead_letters)
        rows = [
            row.split("\t") for row in page.get_by_test_id("topics").locator("tbody tr").all_inner_texts()
        ]
        # Every record was produced within the rate's window (five minutes).
        assert [r[:6] for r in rows if r[0] == topic] == [
            [topic, "0", "0", "5", "5", "5"],
            [topic, "1", "0", "1", "1", "1"],
        ]
        assert [r[:6] for r in rows if r[0] == dead_letters] == [[dead_letters, "0", "0", "2", "2", "2"]]
        rates = page.get_by_test_id("topic-rates").inner_text()
        assert f"{topic}: 0.02 records/s over the last 5 min" in rates
        # Neither layer has a checkpoint here: no figure rather than a guess.
        lag = page.get_by_test_id("lag")
        assert [r.split("\t")[:4] for r in lag.locator("tbody tr").all_inner_texts()] == [
            ["0", "5", "—", "—"], ["1", "1", "—", "—"],
        ]  # fmt: skip
        assert "not committed a micro-batch yet" in lag.inner_text()

        # No Dagster home for this dashboard: the runs part says so rather than failing.
        wait_for_text(page, "runs", "No batch-layer run in Dagster's storage yet.")
        [batch] = page.get_by_test_id("batches").locator("tbody tr").all_inner_texts()
        assert batch.split("\t")[2:8] == ["12", "12", "0", "0", "0", "0.1 s"]

        reasons = wait_for_text(page, "reasons", "not JSON")
        assert "speed\tnot JSON\t3" in reasons and "batch\tmissing field: user.login.uuid\t1" in reasons
        assert f"producer\tany (in the topic {dead_letters})\t2" in reasons
        # Per hour by source (the letters came within seconds, possibly either side of an hour's start).
        wait_for_text(page, "hourly", "Hour (UTC)")
        hours = [r.split("\t") for r in page.get_by_test_id("hourly").locator("tbody tr").all_inner_texts()]
        assert [sum(int(h[column]) for h in hours) for column in (1, 2, 3, 4)] == [2, 3, 1, 6], hours
        # The filter's options and the table reach the browser in messages of their own, after the
        # counts: wait for them as for any text.
        options = page.get_by_label("Dead-letter reason").locator("option")
        expected_options = ["All reasons", "missing field: user.login.uuid", "not JSON"]
        wait_until_equal(page, lambda: sorted(options.all_inner_texts()), expected_options)
        letters = page.get_by_test_id("letters")
        wait_until_equal(page, lambda: letters.locator("tbody tr").count(), 4)
        page.get_by_label("Dead-letter reason").select_option("missing field: user.login.uuid")
        wait_until_equal(page, lambda: letters.locator("tbody tr").count(), 1)
        [letter] = letters.locator("tbody tr").all_inner_texts()
        assert f"{topic}:1:0" in letter and "j***@example.com" not in letter and "jane.doe" not in letter
        assert '"email": "***"' in letter
        page.screenshot(path=str(output_dir / "operations.png"), full_page=True)
        # New dead letters appear at the dead letters' own cadence (3 s here), without a reload.
        stores.dead_letters(5)
        wait_for_text(page, "reasons", "speed\tnot JSON\t5")
    finally:
        delete_topics(dashboard_settings, topic, dead_letters)
