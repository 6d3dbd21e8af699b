"""A Cassandra cluster of two nodes on this machine (``infra.stack.local_cassandra_cluster``, on
127.0.0.2 and 127.0.0.3), the test's keyspace replicated on both (``NetworkTopologyStrategy``, 2 copies)
and every statement at ``LOCAL_QUORUM``, the default: a quorum of two copies is both, so a write while
one node is down fails. What the platform promises then, and this test proves: the producer waits for
its key store and the speed layer retries its micro-batch whole, within the outage tolerance; once the
node is back, nothing is lost and nothing counted twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from core.settings import Settings
from infra.stack import LocalStack, local_cassandra_cluster
from tests.faults.stream import (
    BackgroundProducer,
    ReseeingSource,
    catch_up_and_check,
    committed_batches,
    speed_layer_process,
    stop_when_caught_up,
    wait_until,
)
from tests.integration.support.kafka_helpers import create_topic

pytestmark = pytest.mark.faults

NODES = ["127.0.0.2", "127.0.0.3"]


@pytest.fixture
def cassandra_cluster(
    own_stores: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Settings, LocalStack]]:
    """Two nodes under the test's folder, and settings with the test's own stores (Kafka and FerretDB
    are the stack's), the keyspace on both nodes."""
    settings = own_stores(
        "cassandra2",
        cassandra={"contact_points": NODES, "datacenter_replication": {"datacenter1": 2}},
        reliability={"outage_tolerance_s": 240, "retry_max_delay_s": 5},
        paths={"stack_dir": tmp_path / "cassandra-cluster"},
    )
    cluster = local_cassandra_cluster(settings, NODES)
    cluster.up()
    try:
        yield settings, cluster
    finally:
        cluster.down()


@pytest.mark.timeout(1200)
def test_a_node_of_two_stopped_while_the_stream_runs_loses_and_doubles_nothing(
    spark: SparkSession, cassandra_cluster: tuple[Settings, LocalStack]
) -> None:
    settings, cluster = cassandra_cluster
    create_topic(settings, settings.kafka.profiles_topic)
    source = ReseeingSource(67)
    BackgroundProducer(settings, source, count=1_000, rate_per_s=1_000).start().join(timeout_s=240)
    with speed_layer_process(settings, USERPULSE_RELIABILITY__OUTAGE_TOLERANCE_S="240") as process:
        wait_until(lambda: committed_batches(settings) > 0, timeout_s=300, what="the first micro-batch")
        producer = BackgroundProducer(settings, source, count=3_000, rate_per_s=100).start()
        time.sleep(5)  # under way (a producer that starts with a node down stops at once, loudly)
        assert producer.running()
        node = cluster.services[1]
        assert node.stop()  # SIGTERM, as an operator stops a node
        time.sleep(30)
        assert process.poll() is None, "the speed layer gave up while the node was down"
        if not producer.running():
            producer.join(timeout_s=1)  # raises what stopped it
            pytest.fail("the stream ended while the node was down")
        LocalStack(settings, [node]).up()
        producer.join(timeout_s=600)
        stop_when_caught_up(settings, process, after="the node came back")

    catch_up_and_check(settings, spark)
