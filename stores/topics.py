"""The Kafka topics' personal data: the profiles topic (identifiers sealed) and its dead letters. What
retention does to them, and what erasure cannot (``PersonalDataStore``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from core.settings import KafkaSettings, RetentionSettings
from stores.personal_data import StoreRetention


def topic_retention_ms(admin: KafkaAdminClient, topics: Sequence[str]) -> dict[str, int | None]:
    """The ``retention.ms`` each topic has (None when only the broker's default applies)."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, ["retention.ms"]) for topic in topics]
    )
    result: dict[str, int | None] = {}
    for topic in topics:
        config = described.get("topic", {}).get(topic, {}).get("retention.ms")
        explicit = config is not None and config.get("config_source") == "DYNAMIC_TOPIC_CONFIG"
        result[topic] = int(config["value"]) if explicit else None
    return result


class KafkaTopics:
    """The profiles and dead-letter topics of ``kafka``."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka

    def erase(self, uuid: str) -> dict[str, int]:
        """Nothing can be removed: a topic is not rewritten. The subject's records stay until the
        topic's retention, their identifiers sealed under the data key that erasure shreds
        (``SubjectKeyStore.erase``), so unreadable from then on."""
        return {}

    def expire(self, retention: RetentionSettings, now: datetime) -> list[StoreRetention]:
        """Set ``retention.ms`` on the existing topics where it differs; the broker deletes the expired
        segments itself, so ``now`` is not needed.

        An incremental alter (kafka-python uses IncrementalAlterConfigs when the broker has it): the
        topics' other settings are left as they are.
        """
        wanted = retention.topic_retention_ms
        admin = KafkaAdminClient(**self.kafka.client_options(), client_id="userpulse-retention")
        try:
            existing = set(admin.list_topics())
            topics = [t for t in (self.kafka.profiles_topic, self.kafka.dead_letter_topic) if t in existing]
            current = topic_retention_ms(admin, topics) if topics else {}
            stale = [topic for topic, value in current.items() if value != wanted]
            if stale:
                admin.alter_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, t, {"retention.ms": str(wanted)})
                        for t in stale
                    ]
                )
        finally:
            admin.close()
        return [
            StoreRetention(
                f"kafka {topic}",
                f"{retention.topic_days} days",
                0,
                "records (the broker deletes expired segments)",
                f"retention.ms {'set to' if topic in stale else 'is'} {wanted}",
            )
            for topic in topics
        ]
