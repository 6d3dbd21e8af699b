"""The compose file, read as Docker Compose reads it (YAML, merge keys): the local stack's versions, and a
cluster profile whose services and settings agree with each other and with what a cluster deployment
of UserPulse accepts. No Docker engine runs here, so this is what can be checked without one."""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core.settings import Settings
from infra.images import MONGO_IMAGE, cassandra_image, kafka_image, stack_version
from infra.stack import COMPOSE_FILE

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def in_profile(profile: str | None) -> dict[str, dict[str, Any]]:
    """The services that ``docker compose [--profile profile] up`` adds (None: those of no profile)."""
    return {
        name: service
        for name, service in SERVICES.items()
        if (profile in service.get("profiles", [])) or (profile is None and "profiles" not in service)
    }


def of_image(services: dict[str, dict[str, Any]], repository: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if s.get("image", "").split(":")[0] == repository}


def host_ports(services: dict[str, dict[str, Any]]) -> list[str]:
    return [
        mapping.rsplit(":", 1)[0] for service in services.values() for mapping in service.get("ports", [])
    ]


def cluster_environment(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings of the ``userpulse`` service, with the key its user exports."""
    for name in [n for n in os.environ if n.startswith("USERPULSE_")]:
        monkeypatch.delenv(name)
    for name, value in SERVICES["userpulse"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("USERPULSE_SECRETS__PSEUDONYMIZATION_KEY", "a-key-of-the-user")
    return Settings()


def test_the_containers_run_the_local_stack_versions() -> None:
    assert kafka_image() == f"apache/kafka:{stack_version('kafka')}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", stack_version("kafka")) and stack_version("cassandra")
    images = {s["image"] for s in SERVICES.values() if "build" not in s}
    assert images == {kafka_image(), cassandra_image(), MONGO_IMAGE}


def test_no_profile_runs_one_of_each_service_on_the_default_ports() -> None:
    defaults = Settings()
    single = in_profile(None)
    assert sorted(single) == ["cassandra", "kafka", "mongo"]
    assert sorted(host_ports(single)) == sorted(
        f"127.0.0.1:{port}" for port in (defaults.kafka.port, defaults.cassandra.port, defaults.mongo.port)
    )


def test_the_cluster_profile_has_every_engine_in_its_distributed_form_on_other_ports() -> None:
    cluster = in_profile("cluster")
    assert len(of_image(cluster, "apache/kafka")) == 3
    assert len(of_image(cluster, "cassandra")) == 2
    assert len(of_image(cluster, "mongo")) == 1
    assert {"seaweedfs", "spark-master", "spark-worker", "userpulse"} <= set(cluster)
    assert not set(host_ports(cluster)) & set(host_ports(in_profile(None)))


def test_the_brokers_form_one_kraft_quorum_that_keeps_three_copies() -> None:
    brokers = of_image(in_profile("cluster"), "apache/kafka")
    environments = {name: broker["environment"] for name, broker in brokers.items()}
    voters = {f"{e['KAFKA_NODE_ID']}@{name}:9093" for name, e in environments.items()}
    for name, environment in environments.items():
        assert set(environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert brokers[name]["hostname"] == name
        advertised = dict(a.split("://") for a in environment["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert advertised["INTERNAL"] == f"{name}:19092"
        [published] = brokers[name]["ports"]
        assert published == f"{advertised['EXTERNAL']}:{advertised['EXTERNAL'].rsplit(':', 1)[1]}"
        assert environment["KAFKA_MIN_INSYNC_REPLICAS"] < environment["KAFKA_DEFAULT_REPLICATION_FACTOR"]
        assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == len(brokers)
    assert len({e["CLUSTER_ID"] for e in environments.values()}) == 1
    assert len({e["KAFKA_NODE_ID"] for e in environments.values()}) == len(brokers)


def test_the_userpulse_service_is_a_cluster_deployment_of_the_profile_s_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = cluster_environment(monkeypatch)  # a cluster deployment refuses any local address
    cluster = in_profile("cluster")
    brokers = of_image(cluster, "apache/kafka")
    nodes = of_image(cluster, "cassandra")

    assert settings.deployment == "cluster"
    assert sorted(settings.kafka.bootstrap_servers.split(",")) == [
        f"{name}:19092" for name in sorted(brokers)
    ]
    assert settings.kafka.topic_replication_factor == len(brokers)
    assert settings.cassandra.contact_points == sorted(nodes)
    assert all(n["environment"]["CASSANDRA_SEEDS"] in nodes for n in nodes.values())
    assert settings.cassandra.datacenter_replication == {
        node["environment"]["CASSANDRA_DC"]: len(nodes) for node in nodes.values()
    }
    mongo_uri = settings.mongo.connection_uri
    assert mongo_uri is not None
    [mongo] = of_image(cluster, "mongo")
    assert urlsplit(mongo_uri.get_secret_value()).hostname == mongo
    assert "rs0" in cluster[mongo]["command"] and "replicaSet=rs0" in mongo_uri.get_secret_value()
    assert settings.spark.master == "spark://spark-master:7077"
    assert settings.spark.driver_host == "userpulse" == cluster["userpulse"]["hostname"]
    assert cluster["spark-worker"]["command"][0] == settings.spark.master


def test_the_lake_and_checkpoints_are_in_a_bucket_seaweedfs_creates_for_the_service_s_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = cluster_environment(monkeypatch)
    seaweedfs = SERVICES["seaweedfs"]
    assert urlsplit(settings.object_store.endpoint).hostname == seaweedfs["hostname"]
    buckets = {
        urlsplit(location).netloc for location in (settings.paths.lake_dir, settings.paths.checkpoints_dir)
    }
    assert [f"-bucket={','.join(sorted(buckets))}"] == [
        a for a in seaweedfs["command"] if a.startswith("-bucket")
    ]
    [config] = seaweedfs["configs"]
    identities = json.loads(COMPOSE["configs"][config["source"]]["content"])["identities"]
    [credentials] = [c for identity in identities for c in identity["credentials"]]
    assert settings.object_store.secret_key is not None
    assert credentials == {
        "accessKey": settings.object_store.access_key,
        "secretKey": settings.object_store.secret_key.get_secret_value(),
    }
