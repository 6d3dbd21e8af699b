"""The Kafka edge of the producer: topic creation and an idempotent, counted, batched publisher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata

from core.profile import DeadLetter, ProfileEnvelope
from core.settings import Settings

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, topics: dict[str, int]) -> list[str]:
    """Create each topic (name -> partition count) that does not exist yet; returns those created.

    Each is created with ``retention.ms`` from ``retention.topic_days``, so a topic never depends on
    the broker's default; ``userpulse retention`` sets it again on topics that already exist.
    """
    admin = KafkaAdminClient(**settings.kafka.client_options(), client_id="userpulse-admin")
    try:
        missing = [name for name in topics if name not in set(admin.list_topics())]
        created = []
        for name in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=topics[name],
                            replication_factor=settings.kafka.topic_replication_factor,
                            topic_configs=settings.kafka.topic_configs(settings.retention.topic_retention_ms),
                        )
                    ],
                    wait_for_metadata=True,
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another producer created it between our listing and our request
        return created
    finally:
        admin.close()


@dataclass(frozen=True)
class DeliveryCounts:
    """What the broker acknowledged (or refused) so far."""

    sent: int
    failed: int
    dead_lettered: int
    bytes_sent: int


class ProfilePublisher:
    """Publishes profile envelopes (key = ``login.uuid``) and dead letters to Kafka.

    The producer is idempotent with ``acks=all``, so its own retries neither lose nor duplicate a
    record. Deliveries are counted from the broker's acknowledgements, not from ``send`` calls.
    """

    def __init__(self, settings: Settings, profiles_topic: str, dead_letter_topic: str) -> None:
        producer_settings = settings.producer
        self.profiles_topic = profiles_topic
        self.dead_letter_topic = dead_letter_topic
        self._delivery_timeout_s = producer_settings.delivery_timeout_s
        self._producer = KafkaProducer(
            **settings.kafka.client_options(),
            client_id="userpulse-producer",
            acks="all",
            enable_idempotence=True,
            compression_type=None
            if producer_settings.compression_type == "none"
            else producer_settings.compression_type,
            linger_ms=producer_settings.linger_ms,
            batch_size=producer_settings.batch_bytes,
            delivery_timeout_ms=int(producer_settings.delivery_timeout_s * 1000),
        )
        self._lock = threading.Lock()
        self._sent = self._failed = self._dead_lettered = self._bytes_sent = 0

    def publish(self, envelope: ProfileEnvelope, value: bytes | None = None) -> None:
        """Queue one profile (``value``: its serialized envelope, when the caller has it); its delivery
        is counted when the broker acknowledges it."""
        value = envelope.value() if value is None else value
        key = envelope.uuid.encode()
        future = self._producer.send(self.profiles_topic, key=key, value=value)
        future.add_callback(self._on_sent, len(value))
        future.add_errback(self._on_failed, self.profiles_topic)

    def publish_record(
        self, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> FutureRecordMetadata:
        """Queue a record already serialized (a re-driven dead letter's value) to the profiles topic;
        the returned future gives its coordinates once the broker has acknowledged it."""
        future = self._producer.send(self.profiles_topic, key=key.encode(), value=value, headers=headers)
        future.add_callback(self._on_sent, len(value))
        future.add_errback(self._on_failed, self.profiles_topic)
        return future

    def publish_dead_letter(self, letter: DeadLetter, key: str | None) -> None:
        """Queue one dead letter (keyed by the record's uuid when it has one)."""
        value = letter.model_dump_json().encode()
        future = self._producer.send(self.dead_letter_topic, key=key.encode() if key else None, value=value)
        future.add_callback(self._on_dead_lettered)
        future.add_errback(self._on_failed, self.dead_letter_topic)

    def counts(self) -> DeliveryCounts:
        with self._lock:
            return DeliveryCounts(self._sent, self._failed, self._dead_lettered, self._bytes_sent)

    def flush(self) -> None:
        """Block until every queued record is acknowledged or has failed."""
        self._producer.flush(timeout=self._delivery_timeout_s)

    def close(self) -> None:
        """Flush, then release the connection; nothing queued is dropped."""
        self.flush()
        self._producer.close(timeout=self._delivery_timeout_s)

    def __enter__(self) -> ProfilePublisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _on_sent(self, value_bytes: int, _metadata: object) -> None:
        with self._lock:
            self._sent += 1
            self._bytes_sent += value_bytes

    def _on_dead_lettered(self, _metadata: object) -> None:
        with self._lock:
            self._dead_lettered += 1

    def _on_failed(self, topic: str, error: Exception) -> None:
        with self._lock:
            self._failed += 1
        logger.error("delivery to %s failed: %s", topic, error)
