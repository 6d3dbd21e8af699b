"""Reading a Structured Streaming checkpoint without Spark: the offsets a job has committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.settings import ObjectStoreSettings
from stores.checkpoints import committed_offsets, source_offsets
from stores.object_store import s3_options

TOPIC = "users.profiles"
METADATA = '{"batchWatermarkMs":0,"batchTimestampMs":1765000000000,"conf":{}}'


def offset_log(*sources: str) -> str:
    return "\n".join(["v1", METADATA, *sources])


def test_the_topic_offsets_of_an_offset_log_file() -> None:
    text = offset_log('{"other":{"0":5}}', '{"users.profiles":{"2":7,"0":12,"1":3}}')
    assert source_offsets(text, TOPIC) == {0: 12, 1: 3, 2: 7}
    assert source_offsets(offset_log("-"), TOPIC) is None
    assert source_offsets(offset_log('{"other":{"0":5}}'), TOPIC) is None


def test_a_checkpoint_counts_up_to_its_last_committed_batch_only(tmp_path: Path) -> None:
    assert committed_offsets(str(tmp_path / "none"), TOPIC) is None
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch_id, offset in ((0, 10), (1, 20), (2, 30)):
        (tmp_path / "offsets" / str(batch_id)).write_text(offset_log(f'{{"{TOPIC}":{{"0":{offset}}}}}'))
    assert committed_offsets(str(tmp_path), TOPIC) is None  # planned, never committed
    for batch_id in (0, 1):
        (tmp_path / "commits" / str(batch_id)).write_text("v1\n{}")
    (tmp_path / "commits" / ".1.crc").write_text("")
    # Batch 2 is planned but not committed: under way, not done.
    assert committed_offsets(str(tmp_path), TOPIC) == {0: 20}


def test_a_checkpoint_given_as_a_file_uri_reads_the_same(tmp_path: Path) -> None:
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    (tmp_path / "offsets" / "0").write_text(offset_log(f'{{"{TOPIC}":{{"1":4}}}}'))
    (tmp_path / "commits" / "0").write_text("v1\n{}")
    assert committed_offsets(tmp_path.as_uri(), TOPIC) == {1: 4}


def test_an_s3a_checkpoint_is_opened_with_the_object_store_settings_spark_gets() -> None:
    store = ObjectStoreSettings(
        endpoint="http://127.0.0.1:8333", access_key="lake-user", secret_key=SecretStr("lake-secret")
    )
    assert s3_options(store) == {
        "endpoint_override": "127.0.0.1:8333",
        "scheme": "http",
        "region": "us-east-1",
        "access_key": "lake-user",
        "secret_key": "lake-secret",
        "force_virtual_addressing": False,
    }
    assert store.hadoop_conf() == {
        "fs.s3a.endpoint": "http://127.0.0.1:8333",
        "fs.s3a.endpoint.region": "us-east-1",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.access.key": "lake-user",
        "fs.s3a.secret.key": "lake-secret",
    }
    aws = ObjectStoreSettings(endpoint="", region="eu-west-1", path_style_access=False)
    assert s3_options(aws) == {"region": "eu-west-1", "force_virtual_addressing": True}
    assert aws.hadoop_conf() == {"fs.s3a.endpoint.region": "eu-west-1", "fs.s3a.path.style.access": "false"}
    with pytest.raises(ValidationError, match="go together"):
        ObjectStoreSettings(access_key="lake-user")
