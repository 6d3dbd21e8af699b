"""The one settings object: every endpoint, port, path and secret, with defaults for the local stack.

Override any field with an environment variable: the prefix ``USERPULSE_`` and ``__`` between a section
and its field, e.g. ``USERPULSE_KAFKA__PORT=19092`` or ``USERPULSE_MONGO__DATABASE=analytics``; the same
lines in a ``.env`` file of the working directory count too (the environment wins). ``userpulse settings``
prints the effective values.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote_plus, urlsplit

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from core.validation import RecordLimits

PROJECT_ROOT = Path(__file__).resolve().parents[1]


DEVELOPMENT_PSEUDONYMIZATION_KEY = "local-development-only-pseudonymization-key"
DEVELOPMENT_COOKIE_SECRET = "local-development-only-dashboard-cookie-secret"
_warned_defaults: set[str] = set()

TRIGGER_INTERVAL_PATTERN = r"^\s*\d+(\.\d+)?\s*(milliseconds?|ms|seconds?|s|minutes?|min|hours?|h)\s*$"
"""The durations Spark's ``processingTime`` trigger accepts (a number and a unit)."""


def _cron_expression(expression: str) -> str:
    """A five-field cron expression, checked when the settings load rather than when Dagster reads it."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(f"not a five-field cron expression: {expression!r} (e.g. '*/15 * * * *')")
    return expression


def _comma_list(value: Any) -> Any:
    """A list setting from the environment: ``a:9092,b:9092`` or a JSON list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port number."""

CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
"""A list of strings, written in an environment variable as ``a,b,c`` (or as a JSON list)."""

URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _location(value: Any) -> Any:
    """A lake or checkpoint location: a URI with its scheme (``s3a://bucket/lake``, ``hdfs://...``,
    ``file:///data/lake``) is kept as written; a local path is made absolute (Spark would resolve a
    relative one against each executor's working folder)."""
    if isinstance(value, Path) or (isinstance(value, str) and value and not URI_SCHEME.match(value)):
        return str(Path(value).expanduser().absolute())
    return value


Location = Annotated[str, Field(min_length=1), BeforeValidator(_location)]
"""Where Spark keeps files: a local folder or a URI that Hadoop's file systems open (``s3a://...``)."""


def child_location(location: str, *names: str) -> str:
    """``location``/``names``: joined as Hadoop joins a URI's path, whatever the scheme."""
    return "/".join([location.rstrip("/"), *names])


def location_name(location: str) -> str:
    """The last part of a location (``s3a://bucket/lake/archive`` -> ``archive``)."""
    return location.rstrip("/").rsplit("/", 1)[-1]


CONSISTENCY_LEVELS = Literal["ONE", "LOCAL_ONE", "TWO", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL"]


class InsecureSettingsError(ValueError):
    """A secret is still at its public default where that is not allowed."""


class _Section(BaseModel):
    """A frozen group of settings; unknown keys are an error, attribute docstrings become descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class KafkaSettings(_Section):
    host: str = "127.0.0.1"
    """Host of the Kafka broker's client listener (the local stack's broker listens here)."""
    port: Port = 9092
    """Port of the Kafka broker's client listener."""
    servers: CommaList = Field(default_factory=list)
    """Bootstrap brokers of a cluster, ``host:port,host:port``; clients learn the other brokers from
    them. Empty: ``host:port``."""
    controller_port: Port = 9093
    """Port of the KRaft controller listener of the local broker (not used by clients)."""
    profiles_topic: str = "users.profiles"
    """Topic the producer writes profile envelopes to and both layers read."""
    dead_letter_topic: str = "users.profiles.dlq"
    """Topic for records the producer could not validate, each with its reason."""
    topic_partitions: PositiveInt = 3
    """Partition count used when the producer creates its topics."""
    topic_replication_factor: PositiveInt = 1
    """Copies of each partition when the producer creates its topics (3 on a cluster of three or more
    brokers: a broker can then fail without losing an acknowledged record)."""
    min_insync_replicas: PositiveInt | None = None
    """``min.insync.replicas`` of the topics created: with the producer's ``acks=all``, a write counts
    once this many copies have it (2 with a replication factor of 3). Unset: the broker's default."""

    bootstrap_timeout_s: PositiveFloat = 5.0
    """How long a client waits for the broker's first answer before it reports Kafka unreachable."""
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    """How clients talk to the brokers: SASL authenticates them, SSL encrypts (and checks the broker's
    certificate against ``ssl_ca_file``). The local stack runs PLAINTEXT or SASL_PLAINTEXT."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    """SASL mechanism, with ``sasl_username`` and ``sasl_password``."""
    sasl_username: str | None = None
    """SASL user (required with a SASL protocol)."""
    sasl_password: SecretStr | None = None
    """Password of ``sasl_username``."""
    ssl_ca_file: Path | None = None
    """PEM file of the CA that signed the brokers' certificates (SSL protocols); the system's CAs when
    unset."""

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"{self.security_protocol} needs sasl_username and sasl_password")
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) above topic_replication_factor "
                f"({self.topic_replication_factor}): no write could ever be acknowledged"
            )
        return self

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port,...`` string Kafka clients connect to."""
        return ",".join(self.servers) if self.servers else f"{self.host}:{self.port}"

    def topic_configs(self, retention_ms: int) -> dict[str, str]:
        """Configuration of a topic the platform creates."""
        configs = {"retention.ms": str(retention_ms)}
        if self.min_insync_replicas is not None:
            configs["min.insync.replicas"] = str(self.min_insync_replicas)
        return configs

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def client_options(self) -> dict[str, Any]:
        """What every kafka-python client (producer, consumer, admin) of the platform connects with."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "bootstrap_timeout_ms": int(self.bootstrap_timeout_s * 1000),
            "security_protocol": self.security_protocol,
        }
        if self.uses_sasl:
            assert self.sasl_password is not None  # checked on load
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        if self.ssl_ca_file is not None:
            options["ssl_cafile"] = str(self.ssl_ca_file)
        return options

    def spark_options(self) -> dict[str, str]:
        """The same connection for Spark's Kafka source (``kafka.``-prefixed Java client properties)."""
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.security_protocol,
        }
        if self.uses_sasl:
            assert self.sasl_password is not None
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if self.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            options["kafka.sasl.mechanism"] = self.sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{module} required username="{_jaas_quoted(self.sasl_username or "")}" '
                f'password="{_jaas_quoted(self.sasl_password.get_secret_value())}";'
            )
        if self.ssl_ca_file is not None:
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = str(self.ssl_ca_file)
        return options


def _jaas_quoted(value: str) -> str:
    """A value inside a JAAS option's double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


class RandomUserSettings(_Section):
    base_url: str = "https://randomuser.me/api/1.4/"
    """Versioned API endpoint (tests point it at a local server)."""
    timeout_s: PositiveFloat = 10.0
    """Connect and read timeout of one request."""
    max_attempts: PositiveInt = 6
    """Attempts per batch before the client gives up (and says so)."""
    retry_budget_s: PositiveFloat = 120.0
    """Longest time spent on one batch, waits included: each attempt's timeout is cut to fit, and a
    ``Retry-After`` beyond what is left gives up at once rather than retry too early."""
    backoff_initial_s: PositiveFloat = 1.0
    """First retry delay; it doubles each attempt, with full jitter."""
    backoff_max_s: PositiveFloat = 30.0
    """Cap of one retry delay (a longer ``Retry-After`` is honoured up to the retry budget)."""
    rate_limit_users: PositiveInt = 20_000
    """Users the service allows per IP per window (its published limit)."""
    rate_limit_window_s: PositiveFloat = 300.0
    """Length of that window."""
    auto_probe_budget_s: PositiveFloat = 15.0
    """With ``--source auto``: how long the API may fail before the producer switches to synthetic."""


class ProducerSettings(_Section):
    batch_size: int = 100
    """Profiles fetched (or generated) and sent per batch."""
    linger_ms: NonNegativeInt = 50
    """How long the Kafka producer waits to fill a batch before sending it."""
    batch_bytes: PositiveInt = 1024 * 1024
    """Kafka producer batch size per partition, in bytes."""
    compression_type: Literal["gzip", "none"] = "gzip"
    """Compression of record batches (gzip needs no native library)."""
    delivery_timeout_s: PositiveFloat = 120.0
    """How long ``flush`` waits for outstanding deliveries at shutdown."""
    seal_identifiers: bool = True
    """Seal each profile's direct identifiers with its subject's data key (crypto-shredding: erasing
    the key erases every copy in the topic and the archive). Off only to publish clear envelopes."""


class CassandraSettings(_Section):
    host: str = "127.0.0.1"
    """Contact point of the Cassandra cluster (the local stack's node listens here)."""
    contact_points: CommaList = Field(default_factory=list)
    """Nodes the driver first connects to, ``host,host`` (it learns the others from them; list two or
    more so one down node does not stop a start). Empty: ``host``."""
    port: Port = 9042
    """CQL native transport port (of every contact point)."""
    storage_port: Port = 7000
    """Inter-node port of the local Cassandra (bound, never used by a single node)."""
    keyspace: str = "userpulse"
    """Keyspace holding the transformed profiles and the speed and batch views."""
    local_datacenter: str = "datacenter1"
    """Data centre the driver's load-balancing policy treats as local."""
    replication_factor: PositiveInt = 1
    """Replication factor of the keyspaces we create with ``SimpleStrategy`` (1 on a single node), when
    ``datacenter_replication`` is empty."""
    datacenter_replication: dict[str, PositiveInt] = Field(default_factory=dict)
    """Copies per data centre, e.g. ``{"dc1": 3, "dc2": 3}``: the keyspaces we create use
    ``NetworkTopologyStrategy`` (what a production cluster uses). Empty: ``SimpleStrategy``."""
    consistency_level: CONSISTENCY_LEVELS = "LOCAL_QUORUM"
    """Consistency of every read and write. Quorum writes and quorum reads overlap in at least one
    replica, so the speed layer's dedupe read sees the profiles its earlier micro-batches wrote, at any
    replication factor. With a replication factor of 3, one node down changes nothing; with 2, a quorum
    is both copies: a node down fails the micro-batch loudly, and it is retried (outage tolerance) and
    resumes from its checkpoint. ``ONE`` would keep writing, but a read could miss a write."""
    request_timeout_s: PositiveFloat = 20.0
    """Client-side timeout of one CQL request (schema changes on a busy 2-core node can be slow)."""
    connect_timeout_s: PositiveFloat = 5.0
    """How long opening a connection to a node may take."""
    username: str | None = None
    """User to log in as (Cassandra's ``PasswordAuthenticator``); none for a node that allows all. The
    local stack turns authentication on when it is set."""
    password: SecretStr | None = None
    """Password of ``username``."""
    ssl_ca_file: Path | None = None
    """PEM file of the CA that signed the nodes' certificates: set, the driver speaks TLS and checks
    them (client-to-node encryption on the nodes)."""
    reconnect_max_delay_s: PositiveFloat = 10.0
    """Longest wait between the driver's attempts to reconnect to a node it saw go down (the driver's
    default grows to 10 minutes, far past the end of a short outage)."""
    rows_per_batch: PositiveInt = 5
    """Rows per unlogged batch of the bulk writes (``stores.connections.execute_in_batches``). Cassandra warns
    above 5 KiB per batch (``batch_size_warn_threshold``): five profile rows are ~3.4 KiB, ten ~6.8."""
    concurrency: PositiveInt = 16
    """Concurrent requests per bulk write or lookup (the speed layer's rows and keys, the batch views).
    More only adds overhead on one local node: 20,000 profile rows in batches of 5 at 16 took 0.9 s,
    at 64 1.5 s."""

    @property
    def nodes(self) -> list[str]:
        """The contact points the driver connects to."""
        return self.contact_points or [self.host]

    @property
    def keyspace_replication(self) -> dict[str, str | int]:
        """The ``replication`` map of the keyspaces we create."""
        if self.datacenter_replication:
            return {"class": "NetworkTopologyStrategy", **self.datacenter_replication}
        return {"class": "SimpleStrategy", "replication_factor": self.replication_factor}


class MongoSettings(_Section):
    host: str = "127.0.0.1"
    """Host of the MongoDB wire-protocol server (FerretDB locally, MongoDB under Docker)."""
    port: Port = 27017
    """Port of the MongoDB wire-protocol server."""
    database: str = "userpulse"
    """Database holding the raw profile documents."""
    raw_profiles_collection: str = "profiles"
    """One raw document per profile (``_id`` = uuid), as received, with its Kafka coordinates."""
    dead_letters_collection: str = "dead_letters"
    """Records a streaming job could not use, with their raw bytes, Kafka coordinates and the reason."""
    newest_dead_letters_collection: str = "newest_dead_letters"
    """A copy of the newest dead letters, for the operations page: FerretDB sorts by scanning everything."""
    newest_dead_letters_kept: PositiveInt = 500
    """How many letters ``newest_dead_letters_collection`` keeps (the newest by ``stored_at``)."""
    dead_letter_tallies_collection: str = "dead_letter_tallies"
    """The dead letters not re-driven, counted per layer, reason and hour stored: what the operations
    page reads instead of scanning the letters."""
    latest_profiles_collection: str = "latest_profiles"
    """The newest raw documents only (a copy), for the dashboard: FerretDB sorts by scanning everything."""
    latest_profiles_kept: PositiveInt = 200
    """How many documents ``latest_profiles_collection`` keeps (the newest by ``fetched_at``)."""
    bulk_statements: PositiveInt = 10
    """Statements per ``bulk_write``. FerretDB holds a connection of its pool (100 per database) per
    statement, plus one to write, until the command ends: commands that together need more than the
    pool wait for each other forever. Keep (this + 1) x the tasks writing at once under 100 (10: up to
    9 tasks); on MongoDB itself, raise it (e.g. 1000)."""
    server_selection_timeout_s: PositiveFloat = 5.0
    """How long a MongoDB call waits for a reachable server before it fails."""
    connect_timeout_s: PositiveFloat = 5.0
    """How long opening a connection to the server may take."""
    socket_timeout_s: PositiveFloat = 30.0
    """How long a command may wait for its reply: a server that stops answering fails the call (and the
    micro-batch is retried) instead of hanging it forever."""
    username: str | None = None
    """User to authenticate as (against ``admin``); none for the local FerretDB."""
    password: SecretStr | None = None
    """Password of ``username``."""
    tls_ca_file: Path | None = None
    """PEM file of the CA that signed the server's certificate: set, the client speaks TLS and checks
    it."""
    connection_uri: SecretStr | None = None
    """A MongoDB connection string, e.g. ``mongodb+srv://user:pass@cluster.example.net/?tls=true`` or
    ``mongodb://a:27017,b:27017/?replicaSet=rs0``: replica sets, DNS seed lists, TLS and every other
    option of the URI. Set, it replaces ``host``, ``port``, ``username`` and ``password``."""

    @field_validator("connection_uri")
    @classmethod
    def _mongodb_scheme(cls, uri: SecretStr | None) -> SecretStr | None:
        # pymongo would say so only at the first connection, deep in a job.
        if uri is not None and not uri.get_secret_value().startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("a MongoDB connection string starts with mongodb:// or mongodb+srv://")
        return uri

    def tls_options(self) -> dict[str, Any]:
        """pymongo's TLS options, when ``tls_ca_file`` is set."""
        return {} if self.tls_ca_file is None else {"tls": True, "tlsCAFile": str(self.tls_ca_file)}

    @property
    def address(self) -> str:
        """Where the server is, for messages: the hosts of ``connection_uri`` (no credentials) or
        ``host:port``."""
        if self.connection_uri is None:
            return f"{self.host}:{self.port}"
        scheme, _, rest = self.connection_uri.get_secret_value().partition("://")
        hosts = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
        return f"{scheme}://{hosts}"

    @property
    def uri(self) -> str:
        """The connection string pymongo connects with (credentials included when set)."""
        if self.connection_uri is not None:
            return self.connection_uri.get_secret_value()
        if self.username is None:
            return f"mongodb://{self.host}:{self.port}/"
        password = quote_plus(self.password.get_secret_value()) if self.password else ""
        return f"mongodb://{quote_plus(self.username)}:{password}@{self.host}:{self.port}/?authSource=admin"


class SparkSettings(_Section):
    master: str = "local[2]"
    """Spark master URL; two local threads match the two cores of the reference machine."""
    shuffle_partitions: PositiveInt = 2
    """``spark.sql.shuffle.partitions``: small, since each micro-batch is small."""
    driver_memory: str = "2g"
    """Heap of the Spark driver JVM (local mode runs executors inside it)."""
    ui_enabled: bool = False
    """Whether to start the Spark web UI (off for tests and the demo)."""
    driver_host: str = "127.0.0.1"
    """Address executors connect back to the driver on (``spark.driver.host``): on a cluster, an
    address of the driver's machine that the workers reach."""
    driver_bind_address: str = "127.0.0.1"
    """Interface the driver listens on (``spark.driver.bindAddress``): ``0.0.0.0`` on a cluster."""
    python: str | None = None
    """Python executable of the executors' Python workers (``spark.pyspark.python``); by default the
    interpreter that runs the job. On a cluster, one with the project and its dependencies installed."""
    delta_snapshot_partitions: PositiveInt = 2
    """Partitions Delta rebuilds a table's state from its log in (its default, 50, suits clusters):
    with 50 tasks, every commit and first read of a table took 2.5-4.5 s on two cores, ~0.5 s with 2."""
    conf: dict[str, str] = Field(default_factory=dict)
    """Further Spark settings, applied last (they win over the ones above), e.g.
    ``USERPULSE_SPARK__CONF='{"spark.executor.memory": "4g"}'``: executor sizes, credentials, tuning."""


class SpeedLayerSettings(_Section):
    job_name: str = "speed"
    """Name of the streaming job in the metrics table (and of its checkpoint folder)."""
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    """Where a job without a checkpoint starts reading the topic."""
    max_offsets_per_trigger: PositiveInt = 50_000
    """Upper bound of records per micro-batch, so one slow batch cannot grow without limit."""
    trigger_interval: Annotated[str, StringConstraints(pattern=TRIGGER_INTERVAL_PATTERN)] = "1 second"
    """How often a micro-batch starts (when the previous one is done): a number and a unit, as Spark's
    ``processingTime`` reads it (``500 milliseconds``, ``1 second``, ``2 minutes``)."""
    kafka_fetch_max_wait_ms: NonNegativeInt = 100
    """How long the broker may hold a fetch that finds no new record (Kafka's default: 500 ms). The
    consumer prefetches past the batch it returned; when that was the end of a partition, the next
    batch's first read waited for the parked fetch, up to a second per batch (measured)."""


class ProfileSettings(_Section):
    """What a profile is and how it is counted: the same for the producer and both layers."""

    window_duration: str = "1 minute"
    """Length of the tumbling event-time windows the aggregates of both layers are kept in."""
    minimum_age: NonNegativeInt = 18
    """Profiles younger than this are not counted and not stored (the speed layer's batch metrics
    count them as under age)."""
    max_record_bytes: PositiveInt = 262_144
    """Largest record (Kafka value, in bytes) a profile may take; larger ones are dead letters. A
    sealed randomuser.me profile is about 2 KB."""
    max_clock_skew_s: PositiveInt = 600
    """How far ``fetched_at`` may be after the time the record was written (the Kafka timestamp) before
    it is refused as in the future."""

    @property
    def limits(self) -> RecordLimits:
        """The settings validation depends on."""
        from core.validation import RecordLimits  # the settings do not pull Spark in

        return RecordLimits(self.max_record_bytes, self.max_clock_skew_s)


class BatchLayerSettings(_Section):
    archive_job_name: str = "archive"
    """Name of the archiving job (and of its checkpoint folder)."""
    max_offsets_per_trigger: PositiveInt = 2_000_000
    """Upper bound of records per archiving micro-batch. Each batch costs a Delta commit and the
    query's bookkeeping (~2 s on two cores): 1M records archived in 13 s as one batch, 16.5 s as two.
    A batch streams through its tasks (nothing held in memory), so size only bounds what a failed
    batch redoes."""
    partitions_start_date: date = date(2025, 1, 1)
    """First UTC ingestion day the Dagster assets offer as a partition: a backfill can start no earlier
    (older archive days are still refreshed by ``userpulse batch recompute`` without ``--from``)."""
    archive_trigger: Literal["schedule", "new_offsets"] = "schedule"
    """What starts Dagster's archive runs. ``schedule``: ``archive_schedule``. ``new_offsets``: the
    ``new_offsets_waiting`` sensor, as soon as the topic holds records the archive has not read and no
    batch run is going (checked every ``new_offsets_check_s``): the batch cutoff then moves as often as
    the machine allows, which keeps a small machine's cores busy (the demo's choice)."""
    archive_schedule: Annotated[str, AfterValidator(_cron_expression)] = "*/15 * * * *"
    """When Dagster runs the archive (cron, UTC) with ``archive_trigger = schedule``; each archive run is
    followed by a refresh of the views for the days it appended to, so this is also how often the batch
    cutoff moves. A run is skipped while an archive or refresh run is still going."""
    new_offsets_check_s: PositiveInt = 60
    """How often the ``new_offsets_waiting`` sensor looks at the topic's end offsets, in seconds."""
    vacuum_retention_hours: NonNegativeFloat = 168.0
    """How long VACUUM keeps the data files a Delta table no longer references (time travel, and readers
    still on an older version need them). Delta refuses less than 168 hours (7 days) unless its
    ``spark.databricks.delta.retentionDurationCheck.enabled`` is turned off."""


class RetentionSettings(_Section):
    """How long each store keeps data, in days; enforced by ``userpulse retention`` (daily Dagster job).

    Clear personal data gets the shortest life; pseudonymized data lives as long as the archive it can
    be recomputed from."""

    raw_documents_days: PositiveInt = 30
    """MongoDB raw documents (profiles and the latest-profiles copy), by ``fetched_at``: they hold
    names, e-mails and addresses in clear, so they are kept the shortest."""
    dead_letters_days: PositiveInt = 14
    """MongoDB dead letters, by ``stored_at``: long enough to inspect and fix a bad record."""
    profiles_days: PositiveInt = 90
    """Cassandra ``profiles`` (pseudonymized), by ``fetched_at`` and as the table's default TTL. A
    profile seen again after it expired is counted as new."""
    speed_views_days: PositiveInt = 7
    """Cassandra ``speed_partials``, ``speed_windows`` and ``stream_batches`` rows (by window start
    or processing time, and as their default TTL): the batch views take over once recomputed."""
    archive_days: PositiveInt = 90
    """Delta archive and silver partitions, by UTC ingestion day: the batch views can be recomputed
    from this many days back."""
    topic_days: PositiveInt = 7
    """``retention.ms`` of the profiles and dead-letter topics (the broker deletes whole segments)."""

    @property
    def topic_retention_ms(self) -> int:
        """``topic_days`` as the topic's ``retention.ms``."""
        return self.topic_days * 86_400_000


class ObjectStoreSettings(_Section):
    """The S3-compatible object store of a lake and checkpoints at ``s3a://`` locations: Spark reaches it
    through Hadoop's S3A file system, the operations page through Arrow's S3 file system."""

    endpoint: str = "http://127.0.0.1:8333"
    """URL of its S3 API: the local stack's SeaweedFS by default; empty for AWS S3 itself (found from the
    region)."""
    region: str = "us-east-1"
    """Region of the buckets (S3-compatible servers accept any)."""
    access_key: str | None = None
    """Access key id; none: the AWS default credential chain (environment, profile, instance role)."""
    secret_key: SecretStr | None = None
    """Secret of ``access_key``."""
    path_style_access: bool = True
    """Address buckets in the path (``endpoint/bucket/key``), as S3-compatible servers expect; false for
    virtual-hosted buckets (``bucket.endpoint/key``)."""

    @model_validator(mode="after")
    def _key_with_its_secret(self) -> ObjectStoreSettings:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("object_store.access_key and object_store.secret_key go together")
        return self

    def hadoop_conf(self) -> dict[str, str]:
        """Hadoop's S3A settings (``fs.s3a.*``) for these."""
        conf = {
            "fs.s3a.endpoint.region": self.region,
            "fs.s3a.path.style.access": str(self.path_style_access).lower(),
        }
        if self.endpoint:
            conf["fs.s3a.endpoint"] = self.endpoint
            conf["fs.s3a.connection.ssl.enabled"] = str(self.endpoint.startswith("https:")).lower()
        if self.access_key is not None and self.secret_key is not None:
            conf["fs.s3a.access.key"] = self.access_key
            conf["fs.s3a.secret.key"] = self.secret_key.get_secret_value()
        return conf


class LocalStackSettings(_Section):
    kafka_heap: str = "512m"
    """Heap of the local Kafka broker JVM."""
    cassandra_heap: str = "1G"
    """Heap of the local Cassandra JVM."""
    jvm_gc_threads: PositiveInt = 2
    """Parallel GC threads for the local JVMs, sized for a 2-core machine."""
    startup_timeout_s: PositiveFloat = 180.0
    """How long ``stack up`` waits for a service to answer before giving up."""
    stop_timeout_s: PositiveFloat = 45.0
    """How long ``stack down`` waits after SIGTERM before it sends SIGKILL."""
    java: str = "java"
    """Java 17+ executable that runs the local Kafka and Cassandra."""
    seaweedfs_ports_from: Port = 18330
    """SeaweedFS's servers other than its S3 API (master, volume, filer, their gRPC, admin) listen on
    this port and the next seven (the local object store of a lake at ``s3a://`` locations)."""
    ferretdb_debug_port: Port | None = None
    """Port of FerretDB's HTTP debug handler (pprof, metrics; bound to the Mongo host). Off unless set:
    it answers anyone who reaches it, without authentication."""


class PathSettings(_Section):
    tools_dir: Path = PROJECT_ROOT / ".tools"
    """Installed tools: Maven-resolved jars (``jars/<module>``) and the FerretDB binary (``bin``)."""
    ferretdb_bin: Path = PROJECT_ROOT / ".tools" / "bin" / "ferretdb"
    """FerretDB executable built by ``infra/ferretdb/build.sh``."""
    seaweedfs_bin: Path = PROJECT_ROOT / ".tools" / "bin" / "weed"
    """SeaweedFS executable (the local object store) built by ``infra/seaweedfs/build.sh``."""
    stack_dir: Path = PROJECT_ROOT / ".stack"
    """Runtime state of the local stack: one folder per service with its data, log and pid file."""
    lake_dir: Location = str(PROJECT_ROOT / ".stack" / "lake")
    """Delta Lake tables: a local folder or a URI (``s3a://bucket/lake``: a bucket of the object store
    of ``object_store``; ``hdfs://...``)."""
    checkpoints_dir: Location = str(PROJECT_ROOT / ".stack" / "checkpoints")
    """Structured Streaming checkpoints, one folder per job: a local folder or a URI, like the lake."""
    dagster_home: Path = PROJECT_ROOT / ".stack" / "dagster"
    """``DAGSTER_HOME`` of ``dagster dev`` in the demo: run history, schedule and sensor state."""

    @property
    def archive_table(self) -> str:
        """The Delta table archiving the profiles topic, every record as received."""
        return child_location(self.lake_dir, "archive")

    @property
    def silver_table(self) -> str:
        """Delta table of cleaned, pseudonymized profiles (latest version per uuid), for ad-hoc analysis."""
        return child_location(self.lake_dir, "silver_profiles")

    @property
    def warehouse_dir(self) -> str:
        """Spark SQL's warehouse (tables created by name; the project's tables are addressed by path)."""
        return child_location(self.lake_dir, "warehouse")

    def checkpoint(self, job_name: str) -> str:
        """The checkpoint of the streaming job ``job_name``."""
        return child_location(self.checkpoints_dir, job_name)

    @property
    def spark_jars_dir(self) -> Path:
        """Jars put on Spark's classpath: the Kafka source and Delta Lake for the pinned pyspark."""
        return self.tools_dir / "jars" / "spark"


class ServingSettings(_Section):
    host: str = "127.0.0.1"
    """Address the dashboard binds to: loopback by default; expose it only with basic auth set."""
    port: Port = 5006
    """Port of the dashboard (Panel's own default)."""
    refresh_period_s: PositiveFloat = 5.0
    """How often the dashboard re-queries the stores (a Panel periodic callback, no page reload)."""
    query_timeout_s: PositiveFloat = 10.0
    """How long a refresh may take before the page says the stores are slow (and keeps its figures)."""
    dagster_ui_url: str = "http://127.0.0.1:3000"
    """Where the operations page links a batch-layer run to (the Dagster UI of ``paths.dagster_home``,
    the demo's by default)."""
    dead_letters_refresh_s: PositiveFloat = 30.0
    """How often the operations page reads the dead letters again (its other parts follow
    ``refresh_period_s``): on FerretDB, counting them by reason scans them all (~1 s per 10,000)."""
    timeline_minutes: PositiveInt = 60
    """How far back the ingestion-rate chart reaches."""
    latest_profiles: PositiveInt = 20
    """Rows of the latest-profiles table."""
    top_values: PositiveInt = 15
    """Bars per breakdown chart (the largest values; the rest are summed as "other")."""
    basic_auth_username: str | None = None
    """With a password, the dashboard asks for this user (HTTP basic auth) before it shows anything."""
    basic_auth_password: SecretStr | None = None
    """Password of ``basic_auth_username``."""
    cookie_secret: SecretStr = SecretStr(DEVELOPMENT_COOKIE_SECRET)
    """Signs the login cookie when basic auth is on. The default is public: with basic auth on, the
    dashboard refuses to start until it is set (anyone could forge a login cookie)."""


class DemoSettings(_Section):
    producer_source: Literal["randomuser", "synthetic", "auto"] = "auto"
    """Where the demo's producer takes profiles from (``auto``: the API, synthetic when unreachable)."""
    producer_rate: str = "20/s"
    """The demo producer's target rate (randomuser.me allows 20,000 users per 5 minutes)."""
    dagster_host: str = "127.0.0.1"
    """Address the Dagster webserver of the demo binds to."""
    dagster_port: Port = 3000
    """Port of the Dagster webserver of the demo."""
    new_offsets_check_s: PositiveInt = 10
    """In a demo the archive starts on new offsets (``batch_layer.archive_trigger = new_offsets``),
    looked for this often: the first batch view comes as soon as Dagster and a first archive and refresh
    have run, and the cutoff moves again each time the previous refresh is done. Production keeps its
    schedule."""
    speed_trigger_interval: Annotated[str, StringConstraints(pattern=TRIGGER_INTERVAL_PATTERN)] = "5 seconds"
    """The speed layer's trigger during a demo (it replaces ``speed_layer.trigger_interval``): the
    dashboard refreshes every 5 s anyway, and each micro-batch's fixed cost, paid five times less often,
    leaves the cores to the batch runs the demo is there to show."""
    batch_niceness: Annotated[int, Field(ge=0, le=19)] = 10
    """CPU niceness of the demo's batch layer (Dagster and the Spark runs it launches): on a small
    machine it yields the cores to the dashboard and the speed layer, whose users are waiting."""
    batch_spark_conf: dict[str, str] = Field(
        default_factory=lambda: {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}
    )
    """Spark settings of the demo's batch runs (under ``spark.conf``, which wins). Each run is a JVM of a
    minute or two: the quick JIT alone (C1) costs less than it saves there (cold archive + refresh of
    6,000 profiles: 70 s -> 59 s); the long-running speed layer keeps the optimizing one."""
    stop_timeout_s: PositiveFloat = 60.0
    """How long the demo waits for each process to stop after SIGTERM before it kills it."""


class SecretSettings(_Section):
    pseudonymization_key: SecretStr = SecretStr(DEVELOPMENT_PSEUDONYMIZATION_KEY)
    """HMAC key for keyed pseudonymization of PII. The default is public (it is in this file): it is
    refused outside ``development_mode``; set ``USERPULSE_SECRETS__PSEUDONYMIZATION_KEY``."""
    development_mode: bool = False
    """Allows the public default secrets, with a warning: local runs, ``make demo`` and the tests.
    Outside it, a command that pseudonymizes refuses to start with the default key."""

    def pseudonymization_key_bytes(self) -> bytes:
        """The pseudonymization key, refused when it is the public default outside development mode."""
        key = self.pseudonymization_key.get_secret_value()
        if not key:
            raise InsecureSettingsError(
                "the pseudonymization key is empty: set USERPULSE_SECRETS__PSEUDONYMIZATION_KEY"
            )
        if key == DEVELOPMENT_PSEUDONYMIZATION_KEY:
            if not self.development_mode:
                raise InsecureSettingsError(
                    "the pseudonymization key is the public default, which makes every pseudonym reversible: "
                    "set USERPULSE_SECRETS__PSEUDONYMIZATION_KEY to a secret of your own (e.g. `openssl rand "
                    "-hex 32`), or USERPULSE_SECRETS__DEVELOPMENT_MODE=true for a local trial"
                )
            if "pseudonymization_key" not in _warned_defaults:
                _warned_defaults.add("pseudonymization_key")
                logging.getLogger(__name__).warning(
                    "development mode: pseudonyms use the public default key (not for real data)"
                )
        return key.encode()


class ReliabilitySettings(_Section):
    outage_tolerance_s: PositiveFloat = 120.0
    """How long a job retries a unit of work (a micro-batch) while a store does not answer, with backoff,
    before it stops with one line naming the store and the checkpoint it resumes from."""
    retry_initial_delay_s: PositiveFloat = 1.0
    """First wait between two attempts; each later wait doubles, up to ``retry_max_delay_s``."""
    retry_max_delay_s: PositiveFloat = 15.0
    """Longest wait between two attempts."""


Deployment = Literal["local", "docker", "cluster"]
"""Where the engines run (``Settings.deployment``)."""

LOOPBACK_HOSTS = ("127.", "localhost", "::1", "[::1]")
"""Host prefixes only this machine reaches."""


def loopback_addresses(settings: Settings) -> list[str]:
    """The settings that point at this machine's own services (a cluster deployment has none)."""
    found: list[str] = []
    kafka_hosts = settings.kafka.bootstrap_servers.split(",")
    if any(host.strip().startswith(LOOPBACK_HOSTS) for host in kafka_hosts):
        found.append(f"kafka ({settings.kafka.bootstrap_servers})")
    if any(host.startswith(LOOPBACK_HOSTS) for host in settings.cassandra.nodes):
        found.append(f"cassandra ({', '.join(settings.cassandra.nodes)})")
    mongo_hosts = settings.mongo.address.rpartition("://")[2].split(",")
    if any(host.startswith(LOOPBACK_HOSTS) for host in mongo_hosts):
        found.append(f"mongo ({settings.mongo.address})")
    spark_master_host = urlsplit(settings.spark.master).hostname or ""
    if settings.spark.master.startswith("local") or spark_master_host.startswith(LOOPBACK_HOSTS):
        found.append(f"spark.master ({settings.spark.master})")
    if settings.spark.driver_host.startswith(LOOPBACK_HOSTS):
        # Executors on other machines connect back to the driver at this address.
        found.append(f"spark.driver_host ({settings.spark.driver_host})")
    paths = settings.paths
    for name, location in (
        ("paths.lake_dir", paths.lake_dir),
        ("paths.checkpoints_dir", paths.checkpoints_dir),
    ):
        if not URI_SCHEME.match(location) or location.startswith("file:"):
            found.append(f"{name} (a folder of this machine: {location})")
    on_object_store = any(location.startswith("s3a:") for location in (paths.lake_dir, paths.checkpoints_dir))
    endpoint_host = urlsplit(settings.object_store.endpoint).hostname or ""
    if on_object_store and endpoint_host.startswith(LOOPBACK_HOSTS):
        found.append(f"object_store.endpoint ({settings.object_store.endpoint})")
    return found


class Settings(BaseSettings):
    """Every setting of the platform, grouped by the system it configures."""

    model_config = SettingsConfigDict(
        env_prefix="USERPULSE_",
        env_nested_delimiter="__",
        env_file=".env",
        frozen=True,
        # A .env file may hold other tools' variables too; a section's unknown field is still an error.
        extra="ignore",
        use_attribute_docstrings=True,
    )

    deployment: Deployment = "local"
    """Where the engines run: ``local``, processes ``userpulse stack`` starts on this machine; ``docker``,
    the containers of ``infra/docker-compose.yml`` (``userpulse stack`` runs ``docker compose``);
    ``cluster``, services run by their operators (``userpulse stack`` only probes them, and no address
    may point at this machine)."""
    kafka: KafkaSettings = KafkaSettings()
    randomuser: RandomUserSettings = RandomUserSettings()
    producer: ProducerSettings = ProducerSettings()
    cassandra: CassandraSettings = CassandraSettings()
    mongo: MongoSettings = MongoSettings()
    spark: SparkSettings = SparkSettings()
    profiles: ProfileSettings = ProfileSettings()
    speed_layer: SpeedLayerSettings = SpeedLayerSettings()
    batch_layer: BatchLayerSettings = BatchLayerSettings()
    retention: RetentionSettings = RetentionSettings()
    serving: ServingSettings = ServingSettings()
    demo: DemoSettings = DemoSettings()
    object_store: ObjectStoreSettings = ObjectStoreSettings()
    local_stack: LocalStackSettings = LocalStackSettings()
    paths: PathSettings = PathSettings()
    secrets: SecretSettings = SecretSettings()
    reliability: ReliabilitySettings = ReliabilitySettings()

    @model_validator(mode="after")
    def _cluster_reaches_no_loopback(self) -> Settings:
        # A cluster deployment left at a local default would run against this machine's services.
        if self.deployment == "cluster" and (local := loopback_addresses(self)):
            raise ValueError(
                f"deployment is cluster but these settings point at this machine: {'; '.join(local)}"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
