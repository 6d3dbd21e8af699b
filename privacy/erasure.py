"""Erasure on request (GDPR art. 17): one subject removed from every store, the immutable ones included.

Like retention, erasure reaches every store of both layers, and no layer owns them all: after two steps
of its own it is a loop over the stores that hold personal data
(``stores.personal_data.PersonalDataStore.erase``, listed by ``privacy.stores.personal_data_stores``).

Order matters, and every step can be run again (a failed erasure is finished by running it again):

1. **Log.** The erasure is logged under the keyed pseudonym of the uuid (never the uuid or any personal
   data), which is also how the producer recognises a subject not to publish again, and how every
   later batch recomputation leaves the subject out; it takes the next erasure sequence number (a
   lightweight transaction on ``batch_current``: a recomputation that started before cannot become
   current after).
2. **Merged view.** The subject's contribution as the speed layer counts it (``core.versions``) is
   recorded as an erasure correction, which serving subtracts until a batch view that leaves the
   subject out is current; so the subject stops counting at once, its age included in the minimum and
   maximum. (Read before the stores lose the subject's rows.)
3. **Every store.** The subject keys first: the subject's data key is deleted, and from that moment
   every sealed copy of its profiles in the Kafka topic (and in the archive, until the lake's turn) is
   unreadable; the topic cannot be rewritten, so this is how the erasure reaches it. Then MongoDB's raw
   document, its latest-profiles copy and the dead letters keyed by the uuid; Cassandra's pseudonymized
   ``profiles`` row; and the lake: Delta ``DELETE`` of the subject's archive records and silver rows, a
   ``REORG ... PURGE`` (so no deletion vector keeps the rows in a file), then ``VACUUM`` with no
   retention so that the files that held them are removed, not just unreferenced. The batch views no
   longer count the subject after the next recomputation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.aggregates import window_seconds_of
from core.pseudonymization import pseudonym
from core.settings import Settings
from core.spark import row_dict
from core.versions import ProfileCopy, ProfileState, contribution, fold
from privacy.stores import connected_stores, personal_data_stores
from stores.batch_views import BatchViewStore, ErasureCorrection
from stores.cassandra_schema import apply_schema
from stores.connections import Database, Session
from stores.documents import mongo_raw_store
from stores.speed_views import CassandraSpeedStore
from stores.subject_keys import SubjectKeyStore, subject_pseudonym

logger = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    """What one erasure removed, per store, and what it could not reach."""

    subject_pseudonym: str
    removed: dict[str, int] = field(default_factory=dict)
    """Store -> records (rows, documents, keys) removed."""
    notes: list[str] = field(default_factory=list)


def subjects_with_email(
    email: str, settings: Settings, session: Session, database: Database, spark: SparkSession
) -> set[str]:
    """The uuids of the profiles with this e-mail, found through its keyed pseudonym (Cassandra, silver)
    and, in clear, in the raw documents."""
    key = settings.secrets.pseudonymization_key_bytes()
    email_pseudonym = pseudonym(email, key, "email")
    if email_pseudonym is None:
        return set()
    speed = CassandraSpeedStore(session, settings.cassandra.keyspace, settings.cassandra.concurrency)
    uuids = speed.uuids_with_email_pseudonym(email_pseudonym)
    uuids |= mongo_raw_store(database, settings).uuids_with_email(email)
    silver = str(settings.paths.silver_table)
    if DeltaTable.isDeltaTable(spark, silver):
        matches = spark.read.format("delta").load(silver).where(F.col("email_pseudonym") == email_pseudonym)
        uuids |= {row.uuid for row in matches.select("uuid").distinct().collect()}
    return uuids


def correct_merged_view(
    session: Session, spark: SparkSession, settings: Settings, uuid: str, seq: int
) -> int:
    """Record what the merged view must stop counting of the subject until a batch view leaves it out,
    tagged with the erasure's sequence number and the speed layer's last batch: its contribution as the
    speed layer last had it (``core.versions``), or, when the current batch view covers the archive
    without the speed layer, as that view counts it (from its silver copies). 1 when it was counted."""
    keyspace, cassandra = settings.cassandra.keyspace, settings.cassandra
    speed = CassandraSpeedStore(session, keyspace, cassandra.concurrency)
    views = BatchViewStore(session, keyspace, cassandra.concurrency)
    window_seconds = window_seconds_of(settings.profiles.window_duration)
    current = views.current()
    if current is not None and current.speed_batch_id is None:
        state = silver_state(spark, settings, uuid, current.horizon)
    else:
        stored = speed.states([uuid]).get(uuid)
        state = stored.state if stored else None
    counted = contribution(state, window_seconds)
    if counted is None:
        return 0
    last_batch = next(iter(speed.batch_end_offsets(settings.speed_layer.job_name)), (None, {}))[0]
    views.add_correction(
        ErasureCorrection(seq, last_batch, counted.window_start, counted.age, dict(counted.values))
    )
    return 1


def silver_state(
    spark: SparkSession, settings: Settings, uuid: str, horizon: Mapping[int, int]
) -> ProfileState | None:
    """The subject's state from its silver copies before ``horizon`` (what a batch view counts)."""
    silver = str(settings.paths.silver_table)
    if not DeltaTable.isDeltaTable(spark, silver):
        return None
    key = settings.secrets.pseudonymization_key_bytes()
    rows = (
        spark.read.format("delta")
        .load(silver)
        .where(F.col("subject_pseudonym") == F.lit(subject_pseudonym(uuid, key)))
        .collect()  # one subject's copies: a handful of rows
    )
    copies = [
        ProfileCopy.from_row(row_dict(row)) for row in rows if row.offset < horizon.get(row.partition, 0)
    ]
    return fold(None, copies, settings.profiles.minimum_age)


def erase_subject(
    settings: Settings,
    spark: SparkSession,
    session: Session,
    database: Database,
    uuid: str,
    requested_by: str,
) -> ErasureReport:
    """Erase one subject from every store (see the module docstring for the order and why)."""
    key = settings.secrets.pseudonymization_key_bytes()
    keys = SubjectKeyStore(session, settings.cassandra.keyspace, key, settings.cassandra.concurrency)
    # Logged before its sequence number is taken: a recomputation that sees the number sees the subject.
    report = ErasureReport(keys.log_erasure(uuid, requested_by, {}))
    seq = BatchViewStore(
        session, settings.cassandra.keyspace, settings.cassandra.concurrency
    ).next_erasure_seq()
    report.removed["merged view corrections"] = correct_merged_view(session, spark, settings, uuid, seq)
    for store in personal_data_stores(settings, spark, session, database):
        report.removed.update(store.erase(uuid))
    keys.log_erasure(uuid, requested_by, report.removed)
    report.notes += [
        f"Kafka {settings.kafka.profiles_topic}: the subject's records stay until the topic's retention "
        f"({settings.retention.topic_days} days), their identifiers sealed under the deleted key: "
        "unreadable.",
        "batch views: the subject stops counting at the next recomputation (schedule, or "
        "`userpulse batch recompute`).",
    ]
    logger.info("erased subject %s: %s", report.subject_pseudonym, report.removed)
    return report


class UnseenSubjectsError(LookupError):
    """Subjects that no store has seen: erasing them would only record an erasure (and block them)."""

    def __init__(self, uuids: Iterable[str]) -> None:
        self.uuids = sorted(uuids)
        super().__init__(f"no store has seen {', '.join(self.uuids)}")


def seen_subjects(
    settings: Settings, spark: SparkSession, session: Session, database: Database, uuids: Iterable[str]
) -> set[str]:
    """Those of ``uuids`` that some store has seen: a data key, an earlier erasure, a ``profiles`` row, a
    raw document, a dead letter or an archived record (cheapest stores first)."""
    wanted = set(uuids)
    keys = SubjectKeyStore(
        session, settings.cassandra.keyspace, settings.secrets.pseudonymization_key_bytes(),
        settings.cassandra.concurrency,
    )  # fmt: skip
    seen = set(keys.keys_for(sorted(wanted))) | keys.erased(sorted(wanted))
    speed = CassandraSpeedStore(session, settings.cassandra.keyspace, settings.cassandra.concurrency)
    documents = mongo_raw_store(database, settings)
    seen |= set(speed.states(sorted(wanted - seen)))  # one read of every candidate's row
    seen |= {uuid for uuid in sorted(wanted - seen) if documents.holds_subject(uuid)}
    archive = str(settings.paths.archive_table)
    unseen = sorted(wanted - seen)
    if unseen and DeltaTable.isDeltaTable(spark, archive):
        key = F.col("key").cast("string").alias("uuid")  # the Kafka key, as bytes
        archived = spark.read.format("delta").load(archive).select(key).where(F.col("uuid").isin(unseen))
        seen |= {row.uuid for row in archived.distinct().collect()}  # at most len(unseen) rows
    return seen


def erase_subjects(
    settings: Settings,
    spark: SparkSession,
    uuids: Iterable[str],
    requested_by: str,
    *,
    force: bool = False,
) -> list[ErasureReport]:
    """Erase each subject in ``uuids`` (connections opened once, schema applied).

    Unless ``force``, a subject no store has seen raises ``UnseenSubjectsError`` and nothing is done:
    a mistyped uuid would otherwise be recorded as erased and never published. Erasing before first
    sight is a real case (a request that arrives before the data), so ``force`` allows it.
    """
    wanted = sorted(set(uuids))
    with connected_stores(settings) as (session, database):
        apply_schema(session, settings.cassandra.keyspace, settings.cassandra.keyspace_replication)
        if not force:
            unseen = set(wanted) - seen_subjects(settings, spark, session, database, wanted)
            if unseen:
                raise UnseenSubjectsError(unseen)
        return [erase_subject(settings, spark, session, database, uuid, requested_by) for uuid in wanted]
