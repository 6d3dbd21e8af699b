"""A live stream for the fault tests: the platform's own producer publishing synthetic profiles (1% of
them later versions of profiles it published before) while the speed layer runs as ``userpulse speed``,
and an independent recount of what the topic holds, read back and opened with the subjects' keys;
then every store compared with that recount (``catch_up_and_check``)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from core.sealing import unseal_identifiers
from core.settings import Settings
from infra.isolation import local_folder
from ingestion.kafka_publisher import ProfilePublisher
from ingestion.producer import PatientSubjectKeys, ProfileProducer
from ingestion.synthetic import SyntheticSource
from serving.operations import layer_lag
from speed_layer.job import speed_layer_job
from stores.subject_keys import stored_subject_keys, subject_key_store
from tests.integration.support.kafka_helpers import read_topic
from tests.integration.support.processes import cli_environment
from tests.integration.support.profiles_input import Copy, ProducedInput
from tests.integration.support.stored_state import assert_matches_input, stored_state


class ReseeingSource:
    """Synthetic users where every ``every``-th one is a later version of a user served before (moved to
    another country), as when the API serves a profile again."""

    name = "synthetic"
    api_version = "1.4"

    def __init__(self, seed: int, every: int = 100) -> None:
        self._source = SyntheticSource(seed)
        self._every = every
        self._served: list[dict[str, Any]] = []

    def next_batch(self, count: int, nationalities: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        batch = self._source.next_batch(count, nationalities)
        for index in range(len(batch)):
            if (len(self._served) + 1) % self._every == 0:
                later = copy.deepcopy(self._served[len(self._served) // 2])
                later["location"]["country"] = "Atlantis"
                batch[index] = later
            self._served.append(batch[index])
        return batch


@dataclass
class BackgroundProducer:
    """The producer (``ingestion.producer``) running in a thread, as ``userpulse produce`` runs it."""

    settings: Settings
    source: ReseeingSource
    count: int
    rate_per_s: float
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-test-producer", daemon=True)

    def _run(self) -> None:
        kafka = self.settings.kafka
        try:
            with (
                ProfilePublisher(self.settings, kafka.profiles_topic, kafka.dead_letter_topic) as publisher,
                subject_key_store(self.settings, enabled=True) as keys,
            ):
                assert keys is not None
                producer = ProfileProducer(
                    self.source, publisher, 100,
                    subject_keys=PatientSubjectKeys(keys, self.settings),
                )  # fmt: skip
                producer.run(count=self.count, rate_per_s=self.rate_per_s)
                assert producer.progress().failed == 0
        except BaseException as error:  # reported by join()
            self.errors.append(error)

    def start(self) -> BackgroundProducer:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the producer did not finish within {timeout_s:.0f} s"
        if self.errors:  # its traceback shows under this one
            raise AssertionError(f"the producer failed: {self.errors[0]!r}") from self.errors[0]


def topic_input(settings: Settings) -> ProducedInput:
    """Every record of the profiles topic, opened with its subject's key: the independent recount's
    input (it does not rely on what the producer or the speed layer report)."""
    keys = stored_subject_keys(settings)
    copies = []
    for record in read_topic(settings, settings.kafka.profiles_topic, timeout_s=300):
        envelope = record.value
        user = unseal_identifiers(envelope["user"], envelope["sealed"], keys[record.key])
        copies.append(Copy({**envelope, "user": user}, record.partition, record.offset))
    return ProducedInput(copies)


def committed_batches(settings: Settings) -> int:
    """Micro-batches committed in the speed layer's checkpoint (0 before its first)."""
    commits = local_folder(settings.paths.checkpoint(settings.speed_layer.job_name)) / "commits"
    return sum(1 for path in commits.iterdir() if path.name.isdigit()) if commits.is_dir() else 0


@contextmanager
def speed_layer_process(settings: Settings, **overrides: str) -> Iterator[subprocess.Popen[bytes]]:
    """``userpulse speed`` on the test's topic and stores, in its own process group (its Spark JVM
    included), killed when the block ends if it still runs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=cli_environment(settings, USERPULSE_SPARK__DRIVER_MEMORY="1g", **overrides),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.3)


def speed_layer_caught_up(settings: Settings) -> bool:
    """The speed layer's checkpoint has committed up to the end of every partition of the topic."""
    return all(row.speed_lag == 0 for row in layer_lag(settings))


def catch_up_and_check(settings: Settings, spark: SparkSession) -> None:
    """Run the speed layer over what is left (from its checkpoint), then compare every store with the
    recount of the topic."""
    with speed_layer_job(settings, spark) as job:
        job.run_until_consumed(timeout_s=900)
    produced = topic_input(settings)
    state = stored_state(settings)
    assert_matches_input(state, produced)
    assert produced.duplicates > 0  # later versions were in the stream, and were not counted again


def stop_when_caught_up(settings: Settings, process: subprocess.Popen[bytes], after: str) -> None:
    """Wait until ``userpulse speed`` has consumed the topic to its end, then stop it with SIGTERM (it
    ends its micro-batch and exits 0). Waiting for the topic's end, not for more micro-batches: none
    come once it has caught up."""
    wait_until(
        lambda: speed_layer_caught_up(settings) or process.poll() is not None,
        timeout_s=300,
        what=f"the speed layer at the topic's end {after}",
    )
    assert process.poll() is None, f"the speed layer exited {after}"
    process.terminate()
    assert process.wait(timeout=120) == 0
