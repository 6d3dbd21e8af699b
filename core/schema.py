"""The Spark schemas of a randomuser.me 1.4 profile and of its Kafka envelope, defined once for both layers.

They are read schemas for ``from_json``, tolerant where the API varies (``API-NOTES.md``):

- ``location.postcode`` is a string whatever its JSON type: Spark's JSON reader keeps the text of a number
  read into a string field (``5440`` -> ``"5440"``), so CA/GB/NL postcodes and AU/DE ints share a column;
- coordinates and the timezone offset are strings, as the API sends them;
- ``id.value`` is nullable (null for IR, NZ, TR, UA);
- fields the API may add are not listed, so they are ignored;
- ``login`` lists only ``uuid`` and ``username``: credentials are stripped by the producer, and listing
  them here would let a record that still carried one put it into a column.

Every field is nullable: a missing or mistyped field reads as null, and ``core.parsing`` turns a null
required field into a dead-letter reason instead of failing the query.
"""

from __future__ import annotations

from pyspark.sql.types import (
    DataType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _struct(**fields: DataType) -> StructType:
    """A struct of nullable fields, in the order given (the API's own order)."""
    return StructType([StructField(name, data_type, nullable=True) for name, data_type in fields.items()])


def _dated_age() -> StructType:
    """The ``dob``/``registered`` object: an ISO-8601 instant and the API's age in years at fetch time."""
    return _struct(date=TimestampType(), age=IntegerType())


PROFILE_SCHEMA: StructType = _struct(
    gender=StringType(),
    name=_struct(title=StringType(), first=StringType(), last=StringType()),
    location=_struct(
        street=_struct(number=LongType(), name=StringType()),
        city=StringType(),
        state=StringType(),
        country=StringType(),
        postcode=StringType(),
        coordinates=_struct(latitude=StringType(), longitude=StringType()),
        timezone=_struct(offset=StringType(), description=StringType()),
    ),
    email=StringType(),
    login=_struct(uuid=StringType(), username=StringType()),
    dob=_dated_age(),
    registered=_dated_age(),
    phone=StringType(),
    cell=StringType(),
    id=_struct(name=StringType(), value=StringType()),
    picture=_struct(large=StringType(), medium=StringType(), thumbnail=StringType()),
    nat=StringType(),
)
"""One user of a randomuser.me 1.4 response, without credentials."""

ENVELOPE_SCHEMA: StructType = _struct(
    schema_version=IntegerType(),
    source=StringType(),
    fetched_at=TimestampType(),
    user=PROFILE_SCHEMA,
    sealed=StringType(),
)
"""The value of a message on the profiles topic (``core.profile.ProfileEnvelope``)."""
