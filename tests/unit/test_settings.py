from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from core.settings import MongoSettings, Settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings()

    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.cassandra.port == 9042
    assert settings.mongo.uri == "mongodb://127.0.0.1:27017/"


def test_environment_overrides_a_nested_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_KAFKA__PORT", "19092")
    monkeypatch.setenv("USERPULSE_SECRETS__PSEUDONYMIZATION_KEY", "s3cret")

    settings = Settings()

    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.secrets.pseudonymization_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_an_invalid_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPULSE_CASSANDRA__PORT", "not-a-port")

    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_mongo_uri_carries_quoted_credentials_only_when_set() -> None:
    anonymous = MongoSettings()
    authenticated = MongoSettings(username="app", password=SecretStr("p@ss:word"))

    assert anonymous.uri == "mongodb://127.0.0.1:27017/"
    assert authenticated.uri == "mongodb://app:p%40ss%3Aword@127.0.0.1:27017/?authSource=admin"


def test_the_archive_schedule_is_a_checked_cron_expression(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().batch_layer.archive_schedule == "*/15 * * * *"
    assert Settings().demo.archive_schedule == "* * * * *"
    monkeypatch.setenv("USERPULSE_BATCH_LAYER__ARCHIVE_SCHEDULE", "every 15 minutes")

    with pytest.raises(ValidationError, match="cron"):
        Settings()
