"""The speed layer against the real Kafka, Spark, Cassandra and FerretDB/MongoDB.

A known input (recorded real profiles, synthetic ones, duplicates, under-age profiles and a dozen kinds
of bad records) is produced to a fresh topic; the job consumes it; the stores are compared with an
independent recount in plain Python. Then the last batch is replayed and a job is SIGKILLed mid-stream
and restarted: the stores must not change.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from cassandra import InvalidRequest
from cassandra.cluster import NoHostAvailable
from pyspark.sql import SparkSession

from core.settings import Settings
from infra.isolation import local_folder
from speed_layer.job import speed_layer_job
from stores.connections import cassandra_session
from tests.integration.support.kafka_helpers import create_topic
from tests.integration.support.processes import cli_environment, sigterm_once
from tests.integration.support.profiles_input import (
    produce_known_input,
)
from tests.integration.support.stored_state import assert_matches_input, stored_state

pytestmark = pytest.mark.integration


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def speed_settings(own_stores: Callable[..., Settings]) -> Settings:
    """Settings with stores of this test's own (its topic created) and small micro-batches."""
    settings = own_stores("speed", speed_layer={"max_offsets_per_trigger": 120})
    create_topic(settings, settings.kafka.profiles_topic)
    return settings


def committed_batches(settings: Settings) -> int:
    """Micro-batches the job has stored metrics for (0 while it is still creating its keyspace)."""
    try:
        return len(stored_state(settings).batches)
    except (InvalidRequest, NoHostAvailable):  # no keyspace yet, or a table created a moment ago
        return 0


TOMBSTONES_READ = re.compile(r"Read \d+ live rows and (\d+) tombstone cells")


def tombstones_read(settings: Settings, uuids: list[str]) -> int:
    """Tombstone cells Cassandra reports (in a query trace) having read for those uuids' ``profiles`` rows."""
    cluster, session = cassandra_session(settings)
    try:
        counts = []
        for uuid in uuids:
            result = session.execute(
                f"SELECT * FROM {settings.cassandra.keyspace}.profiles WHERE uuid = %s", (uuid,), trace=True
            )
            trace = result.get_query_trace(max_wait_sec=30)
            read = [int(m.group(1)) for e in trace.events if (m := TOMBSTONES_READ.search(e.description))]
            assert read, f"no read event in the trace of {uuid}: {[e.description for e in trace.events]}"
            counts.extend(read)
        return sum(counts)
    finally:
        cluster.shutdown()


def run_until_consumed(spark: SparkSession, settings: Settings) -> None:
    with speed_layer_job(settings, spark) as job:
        job.run_until_consumed(timeout_s=600)


def test_speed_layer_stores_exactly_the_recount(spark: SparkSession, speed_settings: Settings) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)

    run_until_consumed(spark, speed_settings)

    state = stored_state(speed_settings)
    assert_matches_input(state, produced)
    assert len(state.batches) > 3  # several micro-batches: duplicates crossed batch boundaries
    reasons = {
        produced.bad[coordinates]: letter["reason"] for coordinates, letter in state.dead_letters.items()
    }
    # The kinds of bad records, each with the reason the producer would have given (core.validation).
    assert reasons == {
        "not JSON": "not JSON",
        "JSON array": "not JSON: a JSON value that is not an object",
        "empty value": "empty value",
        "JSON null": "not JSON: a JSON value that is not an object",
        "truncated JSON": "not JSON",
        "no login.uuid": "user.login.uuid: missing",
        "unknown schema version": "unsupported schema_version 99",
        "dob not a date": "user.dob.date: not an ISO-8601 instant",
        "no nationality": "user.nat: missing",
        "key differs from login.uuid": "the Kafka key is not the profile's login.uuid",
        "user not an object": "user: not an object; user.login.uuid: missing",
        "no fetched_at": "fetched_at: missing",
        "no gender": "user.gender: missing",
        "invalid UTF-8": "not UTF-8",
        "2 MB": "record over the limit of 262144 bytes",
        "uuid not a UUID": "user.login.uuid: not a UUID",
        "birth in the future": "user.dob.date: after fetched_at (in the future when fetched)",
        "postcode object": "user.location.postcode: not a text value",
        "nested nulls": "user.location.country: missing; user.dob.date: missing",
        "wrong types": "user.dob.age: not an integer",
        "empty object": "missing or invalid schema_version",
    }
    assert state.dead_letters[next(c for c, w in produced.bad.items() if w == "not JSON")]["raw_value"] == (
        b"not json at all"
    )
    # No plaintext identifier reaches Cassandra.
    plaintext = set()
    for e in produced.first_copies.values():
        user = e["user"]
        plaintext |= {user["email"], user["phone"], user["cell"], user["name"]["first"], user["name"]["last"]}
        plaintext.add(user["location"]["street"]["name"].strip())
    stored_text = {str(value) for profile in state.profiles.values() for value in profile.values()}
    assert not {text for text in stored_text if any(p in text for p in plaintext if len(p) > 3)}
    # A profile seen once left no null behind: a written null is a tombstone every later scan reads.
    seen_once = sorted(uuid for uuid, row in state.profiles.items() if row["previous"] is None)[:5]
    assert seen_once and tombstones_read(speed_settings, seen_once) == 0

    # Running again finds nothing new and changes nothing.
    run_until_consumed(spark, speed_settings)
    again = stored_state(speed_settings)
    assert (again.aggregates, again.profiles.keys(), again.documents.keys()) == (
        state.aggregates,
        state.profiles.keys(),
        state.documents.keys(),
    )


def metrics_of(batches: list[dict[str, Any]]) -> dict[int, tuple[int, ...]]:
    """Each batch's counts (not its timings, which a replay changes)."""
    counts = ("input_rows", "new_profiles", "duplicates", "dead_lettered", "under_age")
    return {batch["batch_id"]: tuple(batch[name] for name in counts) for batch in batches}


def job_environment(settings: Settings, max_offsets_per_trigger: int) -> dict[str, str]:
    """The environment of a ``userpulse speed`` subprocess that uses the test's topic and stores."""
    return cli_environment(
        settings,
        USERPULSE_SPEED_LAYER__MAX_OFFSETS_PER_TRIGGER=str(max_offsets_per_trigger),
        USERPULSE_SPARK__DRIVER_MEMORY="1g",
    )


def test_a_replayed_batch_changes_nothing(spark: SparkSession, speed_settings: Settings) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    run_until_consumed(spark, speed_settings)
    before = stored_state(speed_settings)

    # Forget that the last two batches committed, as after a crash between their writes and the commit.
    commits = local_folder(speed_settings.paths.checkpoint(speed_settings.speed_layer.job_name)) / "commits"
    for last in sorted((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))[-2:]:
        last.unlink()
        (commits / f".{last.name}.crc").unlink(missing_ok=True)
    run_until_consumed(spark, speed_settings)

    after = stored_state(speed_settings)
    assert after.aggregates == before.aggregates
    assert_matches_input(after, produced)  # the replayed batches' metrics included
    assert metrics_of(after.batches) == metrics_of(before.batches)


def test_sigkill_mid_stream_then_restart_counts_everything_once(
    spark: SparkSession, speed_settings: Settings
) -> None:
    produced = produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    environment = job_environment(speed_settings, max_offsets_per_trigger=40)
    process = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the Spark JVM is in its group: SIGKILL takes both down at once
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and committed_batches(speed_settings) < 3:
            assert process.poll() is None, "the speed layer exited before it was killed"
            time.sleep(0.3)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    killed_after = len(stored_state(speed_settings).batches)
    assert killed_after >= 3

    run_until_consumed(spark, speed_settings)  # the restart resumes from the checkpoint

    state = stored_state(speed_settings)
    assert len(state.batches) > killed_after
    assert_matches_input(state, produced)
    shutil.rmtree(local_folder(speed_settings.paths.checkpoints_dir), ignore_errors=True)


def test_sigterm_stops_between_batches(speed_settings: Settings) -> None:
    produce_known_input(speed_settings, speed_settings.kafka.profiles_topic)
    process = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=job_environment(speed_settings, max_offsets_per_trigger=40),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = sigterm_once(process, lambda: committed_batches(speed_settings) >= 2)

    assert process.returncode == 0, stderr
    assert "SIGTERM: stopping after the current batch" in stderr
    checkpoint = local_folder(speed_settings.paths.checkpoint(speed_settings.speed_layer.job_name))
    planned = {p.name for p in (checkpoint / "offsets").iterdir() if p.name.isdigit()}
    committed = {p.name for p in (checkpoint / "commits").iterdir() if p.name.isdigit()}
    # No batch was cut off half-way: each planned batch is committed, except at most the last one,
    # which a busy stream started right away and which refused to run (it wrote nothing at all).
    refused = {int(batch_id) for batch_id in planned - committed}
    assert refused <= {max(int(batch_id) for batch_id in planned)}
    stored_batches = {batch["batch_id"] for batch in stored_state(speed_settings).batches}
    assert {int(batch_id) for batch_id in committed} <= stored_batches
    assert not refused & stored_batches
    if refused:
        assert "stopped at a batch boundary" in stderr
