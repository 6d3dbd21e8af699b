"""The local service stack without Docker: Kafka (KRaft), Cassandra 5.0 and FerretDB as local processes.

Each service lives in ``.stack/<name>/`` (``data/``, ``conf/``, ``service.log``, ``service.pid``).
Processes run in their own session, so ``stop`` can signal the whole process group. Readiness means the
service answers a real request (see ``infra.probes``), not that its port is open.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from cassandra import AuthenticationFailed
from cassandra.cluster import NoHostAvailable

from core.settings import LOOPBACK_HOSTS, Settings
from infra import probes
from stores.object_store import buckets_of

CONFIG_DIR = Path(__file__).resolve().parent / "config"
LOG_TAIL_LINES = 40
POLL_INTERVAL_S = 0.5
PORT_RELEASE_TIMEOUT_S = 5.0


class StackError(RuntimeError):
    """A service could not be installed, started or stopped; the message says why."""


class ServiceState(StrEnum):
    ANSWERING = "answering"
    """Our process runs and answers requests."""
    EXTERNAL = "answering (external)"
    """Something we did not start answers on the port (e.g. Docker Compose): used as is."""
    STARTING = "running, not answering"
    """Our process runs but does not answer (yet)."""
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    endpoint: str
    state: ServiceState
    pid: int | None = None
    detail: str = ""
    """What answered (version, cluster id) or why it did not."""
    ready_after_s: float | None = None
    """Seconds from process start until the first successful probe, when ``up`` started it."""


def render_template(template_path: Path, values: dict[str, object]) -> str:
    """Fill the ``${name}`` placeholders of a config template (``$$`` is a literal ``$``).

    A placeholder without a value, or a malformed one, is a ``StackError`` naming the template.
    """
    try:
        return Template(template_path.read_text()).substitute({k: str(v) for k, v in values.items()})
    except KeyError as missing:
        raise StackError(f"{template_path}: no value for placeholder ${{{missing.args[0]}}}") from None
    except ValueError as malformed:
        raise StackError(f"{template_path}: {malformed}") from None


def read_jvm_options(options_path: Path) -> list[str]:
    """JVM flags from a ``jvm*.options`` file: one per line, ``#`` comments and blank lines ignored."""
    lines = (line.strip() for line in options_path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def new_kafka_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    The same format as ``kafka-storage random-uuid`` prints, and like Kafka's own ``Uuid.randomUuid``
    never starting with ``-``: the storage tool would read such an id (1 in 64) as an option and refuse.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that it does not exist."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _require_built(name: str, binary: Path, build_script: str) -> None:
    """Raise ``StackError`` naming the install step when a service's Go binary is not built."""
    if not os.access(binary, os.X_OK):
        raise StackError(f"{name} is not built at {binary}: run `make install` ({build_script})")


class LocalService(ABC):
    """A server process of the local stack, with its folder, config, probe and lifecycle."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.paths.stack_dir / self.name
        self.data_dir = self.home / "data"
        self.conf_dir = self.home / "conf"
        self.log_path = self.home / "service.log"
        self.pid_path = self.home / "service.pid"

    @property
    @abstractmethod
    def host(self) -> str: ...

    @property
    @abstractmethod
    def port(self) -> int: ...

    @abstractmethod
    def probe(self) -> str:
        """One real request; returns what answered, raises if nothing does."""

    @abstractmethod
    def check_installed(self) -> None:
        """Raise ``StackError`` naming the install step when a binary or jar is missing."""

    @abstractmethod
    def prepare(self) -> None:
        """Write config files and initialise storage; called before every start, so idempotent."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        """Variables added to the server's environment."""
        return {}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def pid(self) -> int | None:
        """The pid of our running server process, if any (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # Guard against pid reuse: our processes all carry their own folder on their command line.
        return pid if str(self.home).encode() in cmdline else None

    def answers(self) -> tuple[bool, str]:
        """Whether the service answers its probe, and what answered or the error."""
        if not probes.port_is_open(self.host, self.port):
            return False, "port closed"
        try:
            return True, self.probe()
        except Exception as error:  # any failure of the probe means "not answering"
            return False, f"{type(error).__name__}: {error}"

    def status(self) -> ServiceStatus:
        pid = self.pid()
        answering, detail = self.answers()
        if answering:
            state = ServiceState.ANSWERING if pid else ServiceState.EXTERNAL
        else:
            state = ServiceState.STARTING if pid else ServiceState.STOPPED
        return ServiceStatus(self.name, self.endpoint, state, pid, detail)

    def start(self) -> int:
        """Start the server in the background; returns its pid. The caller waits with ``wait_ready``."""
        self.check_installed()
        if probes.port_is_open(self.host, self.port):
            raise StackError(
                f"{self.name}: port {self.endpoint} is taken by a process that does not answer "
                f"as {self.name}; stop it or change the port in the settings"
            )
        for folder in (self.home, self.data_dir, self.conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.command(),
                cwd=self.home,
                env={**os.environ, **self.environment()},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the server and its children
            )
        self.pid_path.write_text(str(process.pid))
        return process.pid

    def check_ready(self, pid: int) -> str | None:
        """What answered if the service answers now, None if not yet; ``StackError`` with the log
        tail if the process has exited."""
        answering, detail = self.answers()
        if answering:
            return detail
        if not _process_alive(pid):
            raise StackError(
                f"{self.name} exited during startup. Last lines of {self.log_path}:\n{tail(self.log_path)}"
            )
        return None

    def stop(self) -> bool:
        """Stop our server (SIGTERM to its process group, SIGKILL after the timeout); False if none ran."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.local_stack.stop_timeout_s
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _process_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _process_alive(pid):
                time.sleep(0.1)
        # The kernel may release the listening socket a moment after the process is gone; wait for it,
        # so that `down` returning means the port is free for the next `up`.
        port_deadline = time.monotonic() + PORT_RELEASE_TIMEOUT_S
        while probes.port_is_open(self.host, self.port) and time.monotonic() < port_deadline:
            time.sleep(0.1)
        self.pid_path.unlink(missing_ok=True)
        return True


def _process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state field follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _classpath(jars_dir: Path) -> str:
    if not any(jars_dir.glob("*.jar")):
        raise StackError(f"no jars in {jars_dir}: run `make install` (Maven resolves them into .tools/jars)")
    return f"{jars_dir}/*"


class KafkaService(LocalService):
    """Single-node KRaft Kafka (broker and controller in one JVM)."""

    name = "kafka"

    @property
    def host(self) -> str:
        return self.settings.kafka.host

    @property
    def port(self) -> int:
        return self.settings.kafka.port

    @property
    def jars_dir(self) -> Path:
        return self.settings.paths.tools_dir / "jars" / "kafka"

    def probe(self) -> str:
        return probes.probe_kafka(self.host, self.port, self.settings.kafka)

    def check_installed(self) -> None:
        _classpath(self.jars_dir)

    def _java(self, main_class: str, *args: str, heap: str) -> list[str]:
        stack = self.settings.local_stack
        return [
            stack.java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            f"-XX:ParallelGCThreads={stack.jvm_gc_threads}",
            "-XX:ConcGCThreads=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={CONFIG_DIR / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            _classpath(self.jars_dir),
            main_class,
            *args,
        ]

    def client_listener(self) -> tuple[str, str]:
        """The protocol of the clients' listener and the broker settings it needs: SASL/PLAIN with the
        settings' user as the broker's only one (its own connections included), or none."""
        kafka = self.settings.kafka
        if kafka.security_protocol == "PLAINTEXT":
            return "PLAINTEXT", ""
        if kafka.security_protocol != "SASL_PLAINTEXT" or kafka.sasl_mechanism != "PLAIN":
            raise StackError(
                f"the local Kafka runs PLAINTEXT or SASL_PLAINTEXT with PLAIN, not {kafka.security_protocol} "
                f"with {kafka.sasl_mechanism}: point USERPULSE_KAFKA__HOST at a broker that does"
            )
        assert kafka.sasl_username is not None and kafka.sasl_password is not None
        user, password = kafka.sasl_username, kafka.sasl_password.get_secret_value()
        module = "org.apache.kafka.common.security.plain.PlainLoginModule"
        return "SASL_PLAINTEXT", "\n".join(
            [
                "sasl.enabled.mechanisms=PLAIN",
                "sasl.mechanism.inter.broker.protocol=PLAIN",
                f"listener.name.sasl_plaintext.plain.sasl.jaas.config={module} required "
                f'username="{user}" password="{password}" user_{user}="{password}";',
            ]
        )

    def cluster_values(self) -> dict[str, object]:
        """What makes this node part of its cluster: its id, the controller quorum, the replication of
        the broker's internal topics (one node: its own controller, one copy)."""
        return {
            "node_id": 1,
            "controller_port": self.settings.kafka.controller_port,
            "voters": f"1@{self.host}:{self.settings.kafka.controller_port}",
            "internal_replication": 1,
            "internal_min_isr": 1,
        }

    def cluster_id(self) -> str:
        """The id its storage is formatted with (a new cluster's)."""
        return new_kafka_cluster_id()

    def prepare(self) -> None:
        protocol, security = self.client_listener()
        config_path = self.conf_dir / "server.properties"
        config_path.write_text(
            render_template(
                CONFIG_DIR / "kafka" / "server.properties",
                {
                    "host": self.host,
                    "port": self.port,
                    "data_dir": self.data_dir,
                    "client_protocol": protocol,
                    "client_security": security,
                    **self.cluster_values(),
                },
            )
        )
        config_path.chmod(0o600)  # it may hold the SASL password
        if (self.data_dir / "meta.properties").exists():
            return  # storage is formatted once; formatting again would refuse (or wipe) the log dirs
        format_command = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(config_path),
            heap="256m",
        )
        result = subprocess.run(format_command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def command(self) -> list[str]:
        return self._java(
            "kafka.Kafka", str(self.conf_dir / "server.properties"), heap=self.settings.local_stack.kafka_heap
        )


class KafkaNode(KafkaService):
    """One node (broker and controller) of a KRaft cluster of several on this machine: node ``node_id``
    of ``nodes`` (client and controller port of each), all formatted with ``cluster_id``."""

    def __init__(
        self, settings: Settings, node_id: int, nodes: list[tuple[int, int]], cluster_id: str
    ) -> None:
        self.name = f"kafka-{node_id}"
        self.node_id = node_id
        self.nodes = nodes
        self._cluster_id = cluster_id
        super().__init__(settings)

    @property
    def port(self) -> int:
        return self.nodes[self.node_id - 1][0]

    def cluster_values(self) -> dict[str, object]:
        copies = min(3, len(self.nodes))
        return {
            "node_id": self.node_id,
            "controller_port": self.nodes[self.node_id - 1][1],
            "voters": ",".join(f"{n}@{self.host}:{ports[1]}" for n, ports in enumerate(self.nodes, start=1)),
            "internal_replication": copies,
            "internal_min_isr": max(1, copies - 1),  # one node may be down
        }

    def cluster_id(self) -> str:
        return self._cluster_id

    def probe(self) -> str:
        return probes.probe_kafka(self.host, self.port, self.settings.kafka, brokers=len(self.nodes))


def local_kafka_cluster(settings: Settings, nodes: list[tuple[int, int]]) -> LocalStack:
    """A KRaft cluster of ``len(nodes)`` brokers (each its own controller too) on ``kafka.host``, node
    ``n`` listening on ``nodes[n - 1]`` (client port, controller port), with its folder
    ``paths.stack_dir/kafka-<n>``; started and stopped together like the stack. The internal topics
    get three copies (fewer nodes: one per node), so one node may go down. For trying replication, and
    for the tests that kill a broker of a cluster."""
    cluster_id = new_kafka_cluster_id()
    return LocalStack(settings, [KafkaNode(settings, n, nodes, cluster_id) for n in range(1, len(nodes) + 1)])


class CassandraService(LocalService):
    """Cassandra 5.0 as a ``CassandraDaemon`` in the foreground."""

    name = "cassandra"

    @property
    def host(self) -> str:
        return self.settings.cassandra.host

    @property
    def port(self) -> int:
        return self.settings.cassandra.port

    @property
    def jars_dir(self) -> Path:
        return self.settings.paths.tools_dir / "jars" / "cassandra"

    def probe(self) -> str:
        cassandra = self.settings.cassandra
        try:
            return probes.probe_cassandra(self.host, self.port, cassandra)
        except NoHostAvailable as refused:
            # Authentication on, first start: only the node's default superuser exists yet.
            login_refused = any(isinstance(e, AuthenticationFailed) for e in refused.errors.values())
            if not login_refused or cassandra.username in (None, probes.DEFAULT_CASSANDRA_SUPERUSER[0]):
                raise
            probes.create_cassandra_login(self.host, self.port, cassandra)
            return probes.probe_cassandra(self.host, self.port, cassandra)

    def check_installed(self) -> None:
        _classpath(self.jars_dir)
        self._jamm_jar()

    def _jamm_jar(self) -> Path:
        jamm = sorted(self.jars_dir.glob("jamm-*.jar"))
        if not jamm:
            raise StackError(f"jamm is missing from {self.jars_dir}: run `make install`")
        return jamm[-1]

    def seeds(self) -> str:
        """The nodes it gossips with first: itself, alone."""
        return f"{self.host}:{self.settings.cassandra.storage_port}"

    def prepare(self) -> None:
        cassandra = self.settings.cassandra
        (self.conf_dir / "cassandra.yaml").write_text(
            render_template(
                CONFIG_DIR / "cassandra" / "cassandra.yaml",
                {
                    "host": self.host,
                    "port": cassandra.port,
                    "storage_port": cassandra.storage_port,
                    "seeds": self.seeds(),
                    "data_dir": self.data_dir,
                    "authenticator": "AllowAllAuthenticator"
                    if cassandra.username is None
                    else "PasswordAuthenticator",
                },
            )
        )

    def command(self) -> list[str]:
        stack = self.settings.local_stack
        return [
            stack.java,
            f"-Xms{stack.cassandra_heap}",
            f"-Xmx{stack.cassandra_heap}",
            f"-XX:ParallelGCThreads={stack.jvm_gc_threads}",
            "-XX:ConcGCThreads=1",
            *read_jvm_options(CONFIG_DIR / "cassandra" / "jvm17-server.options"),
            f"-javaagent:{self._jamm_jar()}",
            f"-Dcassandra.config=file://{self.conf_dir / 'cassandra.yaml'}",
            f"-Dlogback.configurationFile={CONFIG_DIR / 'cassandra' / 'logback.xml'}",
            f"-Dcassandra.logdir={self.home}",
            f"-Dcassandra.storagedir={self.data_dir}",
            "-Dcassandra-foreground=yes",
            # A single seed node: nothing to gossip with, so do not wait for gossip to settle.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            "-cp",
            _classpath(self.jars_dir),
            "org.apache.cassandra.service.CassandraDaemon",
        ]


class CassandraNode(CassandraService):
    """One node of a Cassandra cluster of several on this machine: node ``node_id`` of ``addresses``
    (loopback addresses, e.g. 127.0.0.2 and 127.0.0.3: Cassandra tells nodes apart by address), each
    on ``cassandra.port`` and ``cassandra.storage_port``, every node a seed (so none bootstraps, and
    they may start together)."""

    def __init__(self, settings: Settings, node_id: int, addresses: list[str]) -> None:
        self.name = f"cassandra-{node_id}"
        self.node_id = node_id
        self.addresses = addresses
        super().__init__(settings)

    @property
    def host(self) -> str:
        return self.addresses[self.node_id - 1]

    def seeds(self) -> str:
        return ",".join(f"{address}:{self.settings.cassandra.storage_port}" for address in self.addresses)

    def probe(self) -> str:
        """Answers once it sees every other node alive: before that, a keyspace created through it may
        get fewer copies than asked, and a quorum write fails."""
        super().probe()  # its login too, on a first start with authentication on
        return probes.probe_cassandra_ring(self.host, self.port, self.settings.cassandra, self.addresses)


def local_cassandra_cluster(settings: Settings, addresses: list[str]) -> LocalStack:
    """A Cassandra cluster of ``len(addresses)`` nodes, node ``n`` on ``addresses[n - 1]`` (a loopback
    address of this machine) with its folder ``paths.stack_dir/cassandra-<n>``; started and stopped
    together like the stack. For trying replication, and for the tests that stop a node."""
    return LocalStack(settings, [CassandraNode(settings, n, addresses) for n in range(1, len(addresses) + 1)])


class FerretDBService(LocalService):
    """FerretDB v1 on its SQLite backend: the MongoDB wire protocol without a MongoDB server."""

    name = "ferretdb"

    @property
    def host(self) -> str:
        return self.settings.mongo.host

    @property
    def port(self) -> int:
        return self.settings.mongo.port

    def probe(self) -> str:
        return probes.probe_mongo(self.host, self.port)

    def check_installed(self) -> None:
        _require_built("FerretDB", self.settings.paths.ferretdb_bin, "infra/ferretdb/build.sh")

    def prepare(self) -> None:
        """FerretDB creates its SQLite files itself."""

    @property
    def debug_address(self) -> str:
        """FerretDB's debug listener, or ``-`` (its own word for "none") unless a port is set."""
        port = self.settings.local_stack.ferretdb_debug_port
        return "-" if port is None else f"{self.host}:{port}"

    def command(self) -> list[str]:
        # WAL (FerretDB's default) with synchronous=NORMAL: a commit no longer waits for an fsync; an
        # application crash loses nothing, a power loss may lose the last commits (as the rest of this
        # local stack, whose Kafka and Cassandra do not fsync each write either).
        return [
            str(self.settings.paths.ferretdb_bin),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/?_pragma=synchronous(normal)",
            f"--listen-addr={self.endpoint}",
            f"--debug-addr={self.debug_address}",
            f"--state-dir={self.home}",
            "--telemetry=disable",
            "--log-level=info",
        ]

    def environment(self) -> dict[str, str]:
        # Go's collector ran a third of FerretDB's CPU under bulk inserts; collecting at 4x heap growth
        # instead of 2x, with synchronous=NORMAL, took its CPU per 20,000 documents from 3.4 s to 2.6 s.
        return {"GOGC": "400"}


class SeaweedFSService(LocalService):
    """SeaweedFS (``weed mini``: master, volume server, filer and S3 gateway in one process) as the
    object store of a lake and checkpoints at ``s3a://`` locations. Its S3 API listens on
    ``object_store.endpoint``; its other servers on ``local_stack.seaweedfs_ports_from`` and the next
    seven ports. The buckets of the settings' locations are created when it starts."""

    name = "seaweedfs"

    @property
    def host(self) -> str:
        return urlsplit(self.settings.object_store.endpoint).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.settings.object_store.endpoint).port or 8333

    def probe(self) -> str:
        return probes.probe_object_store(self.settings.object_store)

    def check_installed(self) -> None:
        _require_built("SeaweedFS", self.settings.paths.seaweedfs_bin, "infra/seaweedfs/build.sh")

    def prepare(self) -> None:
        store = self.settings.object_store
        identities = []
        if store.access_key is not None and store.secret_key is not None:
            credentials = {"accessKey": store.access_key, "secretKey": store.secret_key.get_secret_value()}
            identities.append({"name": "userpulse", "credentials": [credentials], "actions": ["Admin"]})
        # No identity: SeaweedFS lets anyone in (its default); with one, every request must be signed.
        (self.conf_dir / "s3.json").write_text(json.dumps({"identities": identities}))

    def command(self) -> list[str]:
        first = self.settings.local_stack.seaweedfs_ports_from
        ports = {
            "master.port": first, "master.port.grpc": first + 1,
            "volume.port": first + 2, "volume.port.grpc": first + 3,
            "filer.port": first + 4, "filer.port.grpc": first + 5,
            "s3.port": self.port, "s3.port.grpc": first + 6, "admin.port": first + 7,
        }  # fmt: skip
        buckets = buckets_of(self.settings.paths)
        return [
            str(self.settings.paths.seaweedfs_bin),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            # Only the S3 gateway: no WebDAV, admin UI, Iceberg or Lance servers.
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.conf_dir / 's3.json'}",
            *([f"-bucket={','.join(buckets)}"] if buckets else []),
        ]


def on_local_object_store(settings: Settings) -> bool:
    """Whether the lake or the checkpoints are at ``s3a://`` locations of an object store on this
    machine: the stack then runs SeaweedFS as that store."""
    endpoint_host = urlsplit(settings.object_store.endpoint).hostname or ""
    return bool(buckets_of(settings.paths)) and endpoint_host.startswith(LOOPBACK_HOSTS)


COMPOSE_FILE = Path(__file__).parent / "docker-compose.yml"
"""The same services as containers (``deployment = docker``)."""


def compose_command(*arguments: str) -> list[str]:
    """``docker compose`` on the project's compose file."""
    return ["docker", "compose", "-f", str(COMPOSE_FILE), *arguments]


def run_compose(settings: Settings, *arguments: str) -> None:
    """Run ``docker compose`` (``deployment = docker``); its error output ends in a ``StackError``."""
    command = compose_command(*arguments)
    try:
        finished = subprocess.run(
            command, capture_output=True, text=True, timeout=settings.local_stack.startup_timeout_s
        )
    except FileNotFoundError as error:
        raise StackError("deployment is docker but the `docker` command is not installed") from error
    except subprocess.TimeoutExpired as error:
        raise StackError(f"`{' '.join(command)}` did not finish within {error.timeout:.0f} s") from error
    if finished.returncode != 0 and "Usage:  docker [OPTIONS] COMMAND" in finished.stderr:
        raise StackError("deployment is docker but this docker client has no `docker compose` plugin")
    if finished.returncode != 0:
        output = (finished.stderr or finished.stdout).strip().splitlines()
        raise StackError(f"`{' '.join(command)}` failed: {' / '.join(output[-3:]) or finished.returncode}")


CLUSTER_SERVICES = (
    "deployment is cluster: Kafka, Cassandra and MongoDB are run by their operators, not by this "
    "command (`userpulse stack status` probes them)"
)


class LocalStack:
    """The three services (four with a lake on the local object store), started and stopped together:
    as processes on this machine (``deployment = local``) or as the compose file's containers
    (``docker``); a cluster's are only probed."""

    def __init__(self, settings: Settings, services: list[LocalService] | None = None) -> None:
        self.settings = settings
        self.services: list[LocalService] = services or [
            KafkaService(settings),
            CassandraService(settings),
            FerretDBService(settings),
            *([SeaweedFSService(settings)] if on_local_object_store(settings) else []),
        ]

    def status(self) -> list[ServiceStatus]:
        return [service.status() for service in self.services]

    def all_answering(self) -> bool:
        return all(
            status.state in (ServiceState.ANSWERING, ServiceState.EXTERNAL) for status in self.status()
        )

    def up(self, on_ready: Callable[[ServiceStatus], None] | None = None) -> list[ServiceStatus]:
        """Start every service that does not answer yet and wait until all answer.

        Services start in parallel. If one fails, those this call started are stopped again and a
        ``StackError`` with the failing service's log tail is raised.
        """
        if self.settings.deployment == "cluster":
            raise StackError(CLUSTER_SERVICES)
        if self.settings.deployment == "docker":
            run_compose(self.settings, "up", "--detach", "--wait")
            return self.status()
        started: dict[str, tuple[int, float]] = {}
        results: dict[str, ServiceStatus] = {}
        try:
            for service in self.services:
                current = service.status()
                if current.state in (ServiceState.ANSWERING, ServiceState.EXTERNAL):
                    results[service.name] = current
                elif current.state is ServiceState.STARTING:
                    # Ours, still starting (e.g. an earlier `up` was interrupted): just wait for it.
                    started[service.name] = (current.pid or 0, time.monotonic())
                else:
                    started[service.name] = (service.start(), time.monotonic())
            self._wait_ready([s for s in self.services if s.name in started], started, results, on_ready)
        except BaseException:
            self._stop(service for service in self.services if service.name in started)
            raise
        return [results[service.name] for service in self.services]

    def _wait_ready(
        self,
        pending: list[LocalService],
        started: dict[str, tuple[int, float]],
        results: dict[str, ServiceStatus],
        on_ready: Callable[[ServiceStatus], None] | None,
    ) -> None:
        """Poll the started services together until each answers; raise on the first that fails."""
        deadline = time.monotonic() + self.settings.local_stack.startup_timeout_s
        while pending:
            for service in list(pending):
                pid, started_at = started[service.name]
                detail = service.check_ready(pid)
                if detail is None:
                    continue
                pending.remove(service)
                results[service.name] = ServiceStatus(
                    service.name,
                    service.endpoint,
                    ServiceState.ANSWERING,
                    pid,
                    detail,
                    ready_after_s=time.monotonic() - started_at,
                )
                if on_ready:
                    on_ready(results[service.name])
            if pending and time.monotonic() > deadline:
                service = pending[0]
                raise StackError(
                    f"{service.name} did not answer on {service.endpoint} within "
                    f"{self.settings.local_stack.startup_timeout_s:.0f} s ({service.answers()[1]}). "
                    f"Last lines of {service.log_path}:\n{tail(service.log_path)}"
                )
            if pending:
                time.sleep(POLL_INTERVAL_S)

    def down(self) -> list[str]:
        """Stop the services we started; returns their names. External services are left alone."""
        if self.settings.deployment == "cluster":
            raise StackError(CLUSTER_SERVICES)
        if self.settings.deployment == "docker":
            run_compose(self.settings, "down")
            return [service.name for service in self.services]
        return self._stop(self.services)

    def reset(self) -> list[str]:
        """Stop our services and delete all their data, logs and the lake; returns what was removed."""
        if self.settings.deployment == "docker":
            run_compose(self.settings, "down", "--volumes")
        else:
            self.down()
        stack_dir = self.settings.paths.stack_dir
        removed = [str(path) for path in sorted(stack_dir.iterdir())] if stack_dir.exists() else []
        shutil.rmtree(stack_dir, ignore_errors=True)
        return removed

    @staticmethod
    def _stop(services: Iterable[LocalService]) -> list[str]:
        return [service.name for service in services if service.stop()]
