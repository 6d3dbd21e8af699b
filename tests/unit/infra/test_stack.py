"""The local stack's logic, with small stand-in processes instead of the real servers."""

from __future__ import annotations

import base64
import json
import socket
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import KafkaSettings, ObjectStoreSettings, PathSettings, Settings
from infra.stack import (
    COMPOSE_FILE,
    CassandraNode,
    CassandraService,
    FerretDBService,
    KafkaNode,
    KafkaService,
    LocalService,
    LocalStack,
    SeaweedFSService,
    ServiceState,
    StackError,
    _process_alive,
    local_cassandra_cluster,
    local_kafka_cluster,
    new_kafka_cluster_id,
    read_jvm_options,
    render_template,
)
from tests.integration.support.processes import free_port


class StandInService(LocalService):
    """A service whose server is any command; it 'answers' when its port accepts connections."""

    def __init__(self, settings: Settings, name: str, command: list[str], port: int) -> None:
        self.name = name
        super().__init__(settings)
        self._command = command
        self._port = port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    def probe(self) -> str:
        return "stand-in answered"

    def check_installed(self) -> None:
        pass

    def prepare(self) -> None:
        pass

    def command(self) -> list[str]:
        return [arg.replace("{home}", str(self.home)) for arg in self._command]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(paths=PathSettings(stack_dir=tmp_path / "stack"))


def http_server(settings: Settings, name: str) -> StandInService:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "{home}"]
    return StandInService(settings, name, command, port)


def test_render_template_fills_placeholders_and_rejects_missing_ones(tmp_path: Path) -> None:
    template = tmp_path / "server.properties"
    template.write_text("listeners=PLAINTEXT://${host}:${port}\n")

    assert (
        render_template(template, {"host": "127.0.0.1", "port": 9092})
        == "listeners=PLAINTEXT://127.0.0.1:9092\n"
    )
    with pytest.raises(StackError, match=r"server.properties: no value for placeholder \$\{port\}"):
        render_template(template, {"host": "127.0.0.1"})


@pytest.mark.parametrize(
    "template_path",
    [Path("infra/config/kafka/server.properties"), Path("infra/config/cassandra/cassandra.yaml")],
)
def test_shipped_templates_are_well_formed(template_path: Path) -> None:
    values = {
        "host": "127.0.0.1",
        "port": 1,
        "controller_port": 2,
        "storage_port": 3,
        "data_dir": "/data",
        "client_protocol": "PLAINTEXT",
        "client_security": "",
        "authenticator": "AllowAllAuthenticator",
        "node_id": 1,
        "voters": "1@127.0.0.1:2",
        "seeds": "127.0.0.1:3",
        "internal_replication": 1,
        "internal_min_isr": 1,
    }

    render_template(template_path, values)


def test_a_node_of_a_local_kafka_cluster_knows_its_peers(settings: Settings) -> None:
    nodes = [(19092, 19093), (19094, 19095), (19096, 19097)]
    cluster = local_kafka_cluster(settings, nodes)
    second = cluster.services[1]
    assert isinstance(second, KafkaNode)

    values = {**second.cluster_values(), "host": "127.0.0.1", "port": second.port, "data_dir": "/d"}
    config = render_template(
        Path("infra/config/kafka/server.properties"),
        {**values, "client_protocol": "PLAINTEXT", "client_security": ""},
    )
    lines = set(config.splitlines())
    assert {
        "node.id=2",
        "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097",
        "listeners=PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.min.isr=2",
    } <= lines
    assert [service.name for service in cluster.services] == ["kafka-1", "kafka-2", "kafka-3"]
    assert len({service.cluster_id() for service in cluster.services}) == 1  # one cluster
    assert second.home == settings.paths.stack_dir / "kafka-2"
    # The single-node stack: its own controller, one copy of everything.
    single = KafkaService(settings).cluster_values()
    assert (single["voters"], single["internal_replication"]) == ("1@127.0.0.1:9093", 1)


def test_read_jvm_options_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    options = tmp_path / "jvm.options"
    options.write_text(
        "# comment\n\n--add-exports java.base/jdk.internal.misc=ALL-UNNAMED\n  -XX:+UseG1GC  \n"
    )

    assert read_jvm_options(options) == [
        "--add-exports java.base/jdk.internal.misc=ALL-UNNAMED",
        "-XX:+UseG1GC",
    ]


def test_the_shipped_cassandra_options_are_single_flags() -> None:
    options = read_jvm_options(Path("infra/config/cassandra/jvm17-server.options"))

    assert "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" in options
    assert all(" " not in option for option in options)


def test_kafka_cluster_id_is_16_bytes_of_url_safe_base64() -> None:
    cluster_id = new_kafka_cluster_id()

    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_kafka_cluster_id() != cluster_id


def test_kafka_cluster_id_never_starts_with_a_dash() -> None:
    # 0xfb... encodes to "-" first: the storage tool would take it for an option.
    draws = iter([b"\xfb" + bytes(15), b"\x01" + bytes(15)])

    cluster_id = new_kafka_cluster_id(lambda: next(draws))

    assert cluster_id == base64.urlsafe_b64encode(b"\x01" + bytes(15)).rstrip(b"=").decode()


def test_status_of_services_that_never_started(settings: Settings) -> None:
    stack = LocalStack(settings, services=[http_server(settings, "web")])

    [status] = stack.status()

    assert status.state is ServiceState.STOPPED
    assert status.pid is None
    assert not stack.all_answering()


def test_up_is_idempotent_and_down_stops_everything(settings: Settings) -> None:
    service = http_server(settings, "web")
    stack = LocalStack(settings, services=[service])

    [first] = stack.up()
    [second] = stack.up()
    try:
        assert first.state is ServiceState.ANSWERING
        assert first.ready_after_s is not None
        assert second.pid == first.pid  # already answering: not started again
        assert second.ready_after_s is None
    finally:
        assert stack.down() == ["web"]
    assert first.pid is not None and not _process_alive(first.pid)
    assert stack.down() == []


def test_a_failed_start_reports_the_log_tail_and_stops_what_it_started(settings: Settings) -> None:
    healthy = http_server(settings, "healthy")
    broken = StandInService(
        settings, "broken", ["sh", "-c", "echo 'FATAL: cannot open {home}/data'; exit 3"], free_port()
    )
    stack = LocalStack(settings, services=[healthy, broken])

    with pytest.raises(StackError, match=r"broken exited during startup(.|\n)*FATAL: cannot open"):
        stack.up()

    assert [(s.name, s.state) for s in stack.status()] == [
        ("healthy", ServiceState.STOPPED),
        ("broken", ServiceState.STOPPED),
    ]


def test_a_port_taken_by_a_stranger_is_reported(settings: Settings) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        service = StandInService(settings, "web", ["true"], port)

        with pytest.raises(StackError, match="taken by a process that does not answer"):
            service.start()


def test_ferretdb_debug_listener_is_off_unless_a_port_is_set(settings: Settings) -> None:
    # Its pprof and metrics handlers answer anyone who reaches them, without authentication.
    assert "--debug-addr=-" in FerretDBService(settings).command()

    asked = settings.model_copy(
        update={"local_stack": settings.local_stack.model_copy(update={"ferretdb_debug_port": 8088})}
    )
    assert f"--debug-addr={settings.mongo.host}:8088" in FerretDBService(asked).command()


def test_local_kafka_with_sasl_listens_with_the_settings_user_only(settings: Settings) -> None:
    secure = settings.model_copy(
        update={
            "kafka": KafkaSettings(
                security_protocol="SASL_PLAINTEXT", sasl_username="app", sasl_password=SecretStr("s3cret")
            )
        }
    )

    protocol, security = KafkaService(secure).client_listener()

    assert protocol == "SASL_PLAINTEXT"
    assert "sasl.enabled.mechanisms=PLAIN" in security.splitlines()
    assert 'username="app" password="s3cret" user_app="s3cret";' in security
    assert KafkaService(settings).client_listener() == ("PLAINTEXT", "")


def test_local_kafka_refuses_a_protocol_it_cannot_serve(settings: Settings) -> None:
    tls = settings.model_copy(update={"kafka": KafkaSettings(security_protocol="SSL")})

    with pytest.raises(StackError, match="the local Kafka runs PLAINTEXT or SASL_PLAINTEXT with PLAIN"):
        KafkaService(tls).client_listener()


def fake_docker(directory: Path, stderr: str, exit_code: int) -> None:
    """A ``docker`` command on PATH that records its arguments and answers like the real client."""
    script = directory / "docker"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {directory}/calls\nprintf %s "{stderr}" >&2\nexit {exit_code}\n'
    )
    script.chmod(0o755)


def test_a_docker_deployment_runs_the_compose_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = settings.model_copy(update={"deployment": "docker"})
    monkeypatch.setenv("PATH", f"{tmp_path}:/bin:/usr/bin")
    fake_docker(tmp_path, "", 0)

    statuses = LocalStack(docker, [http_server(docker, "web")]).up()
    assert [status.state for status in statuses] == [ServiceState.STOPPED]  # nothing answers here
    assert LocalStack(docker, [http_server(docker, "web")]).down() == ["web"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == [f"compose -f {COMPOSE_FILE} up --detach --wait", f"compose -f {COMPOSE_FILE} down"]

    fake_docker(tmp_path, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", 1)
    with pytest.raises(StackError, match="failed: Cannot connect to the Docker daemon"):
        LocalStack(docker).up()
    fake_docker(
        tmp_path, "unknown shorthand flag: 'f' in -f\n\nUsage:  docker [OPTIONS] COMMAND [ARG...]", 125
    )
    with pytest.raises(StackError, match="no `docker compose` plugin"):
        LocalStack(docker).up()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(StackError, match="`docker` command is not installed"):
        LocalStack(docker).down()


def test_a_cluster_deployment_is_only_probed(settings: Settings) -> None:
    cluster = settings.model_copy(update={"deployment": "cluster"})
    for action in (LocalStack(cluster).up, LocalStack(cluster).down):
        with pytest.raises(StackError, match="run by their operators"):
            action()
    assert [status.state for status in LocalStack(cluster, [http_server(cluster, "web")]).status()] == [
        ServiceState.STOPPED
    ]


def test_every_node_of_a_local_cassandra_cluster_is_a_seed_on_its_own_address(settings: Settings) -> None:
    cluster = local_cassandra_cluster(settings, ["127.0.0.2", "127.0.0.3"])
    first, second = cluster.services
    assert isinstance(second, CassandraNode)

    assert (first.host, second.host) == ("127.0.0.2", "127.0.0.3")
    assert second.seeds() == "127.0.0.2:7000,127.0.0.3:7000"
    assert second.home == settings.paths.stack_dir / "cassandra-2"
    assert CassandraService(settings).seeds() == "127.0.0.1:7000"  # the stack's node, alone


def test_the_stack_runs_seaweedfs_only_for_a_lake_on_an_object_store_of_this_machine(
    settings: Settings,
) -> None:
    assert [s.name for s in LocalStack(settings).services] == ["kafka", "cassandra", "ferretdb"]

    on_s3 = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"lake_dir": "s3a://lake/userpulse"})}
    )
    [*_, seaweedfs] = LocalStack(on_s3).services
    assert isinstance(seaweedfs, SeaweedFSService) and seaweedfs.endpoint == "127.0.0.1:8333"
    command = seaweedfs.command()
    # Its own S3 port and bucket; its other servers on the eight ports from seaweedfs_ports_from.
    assert {"mini", "-s3.port=8333", "-bucket=lake", "-ip.bind=127.0.0.1"} <= set(command)
    ports = [int(arg.split("=")[1]) for arg in command if ".port" in arg and not arg.startswith("-s3.port=")]
    first = on_s3.local_stack.seaweedfs_ports_from
    assert sorted(p for p in ports if p) == list(range(first, first + 8))

    elsewhere = on_s3.model_copy(
        update={"object_store": ObjectStoreSettings(endpoint="https://s3.eu-west-1.amazonaws.com")}
    )
    assert [s.name for s in LocalStack(elsewhere).services] == ["kafka", "cassandra", "ferretdb"]


def test_seaweedfs_lets_in_only_the_settings_keys_when_they_are_set(settings: Settings) -> None:
    open_store = SeaweedFSService(settings)
    open_store.conf_dir.mkdir(parents=True)
    open_store.prepare()
    assert json.loads((open_store.conf_dir / "s3.json").read_text()) == {"identities": []}

    keyed = settings.model_copy(
        update={"object_store": ObjectStoreSettings(access_key="userpulse", secret_key=SecretStr("s3cret"))}
    )
    SeaweedFSService(keyed).prepare()
    [identity] = json.loads((open_store.conf_dir / "s3.json").read_text())["identities"]
    assert identity["credentials"] == [{"accessKey": "userpulse", "secretKey": "s3cret"}]
