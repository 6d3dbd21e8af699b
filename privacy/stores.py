"""The stores that hold personal data, as erasure and retention reach them: connected once, listed in
the order of the data flow, each a ``stores.personal_data.PersonalDataStore``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from core.settings import Settings
from stores.connections import Database, Session, cassandra_session, mongo_client, mongo_database
from stores.documents import mongo_raw_store
from stores.lake import DeltaLake
from stores.personal_data import PersonalDataStore
from stores.speed_views import CassandraSpeedStore
from stores.subject_keys import SubjectKeyStore
from stores.topics import KafkaTopics


@contextmanager
def connected_stores(settings: Settings) -> Iterator[tuple[Session, Database]]:
    """A Cassandra session and the MongoDB database, closed when the block ends."""
    cluster, session = cassandra_session(settings)
    client = mongo_client(settings)
    try:
        yield session, mongo_database(client, settings)
    finally:
        client.close()
        cluster.shutdown()


def personal_data_stores(
    settings: Settings, spark: SparkSession, session: Session, database: Database
) -> list[PersonalDataStore]:
    """Every store that holds personal data: the subject keys first (shredding a key makes every sealed
    copy of the subject unreadable at once, so an erasure stopped half-way has done that much), then
    the others in the order of the data flow."""
    cassandra = settings.cassandra
    key = settings.secrets.pseudonymization_key_bytes()
    return [
        SubjectKeyStore(session, cassandra.keyspace, key, cassandra.concurrency),
        KafkaTopics(settings.kafka),
        mongo_raw_store(database, settings),
        CassandraSpeedStore(session, cassandra.keyspace, cassandra.concurrency),
        DeltaLake(spark, settings.paths, key),
    ]
