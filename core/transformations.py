"""The profile transformations both layers apply: derived fields, pseudonyms, the minimum-age split.

Column functions take the ``user`` struct of an envelope (``core.schema.PROFILE_SCHEMA``) and return one
derived column; ``transform_profiles`` assembles them into the stored profile. All are pure: no actions,
so they work on streaming and batch frames alike.

Dates are UTC dates, computed from the instant itself rather than through the session time zone, so a
session configured otherwise cannot shift a birthday or a registration by a day.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.pseudonymization import pseudonym_column, strip_column
from core.validation import valid_instant

AGE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("<18", 0, 18),
    ("18-24", 18, 25),
    ("25-34", 25, 35),
    ("35-44", 35, 45),
    ("45-54", 45, 55),
    ("55-64", 55, 65),
    ("65+", 65, None),
)
"""Age bands as (label, lowest age, first age of the next band or None); ``<18`` also takes negatives."""

PROFILE_COLUMNS: tuple[str, ...] = (
    "uuid",
    "fetched_at",
    "source",
    "gender",
    "country",
    "nationality",
    "email_domain",
    "age",
    "age_band",
    "registration_date",
    "email_pseudonym",
    "phone_pseudonym",
    "cell_pseudonym",
    "address_pseudonym",
    "partition",
    "offset",
)
"""Columns of ``transform_profiles``, in order."""

_SECONDS_PER_DAY = 86_400


def age_band_of(age: int) -> str:
    """The label of the band of ``AGE_BANDS`` an age in years falls in."""
    for label, _, upper in AGE_BANDS:
        if upper is None or age < upper:
            return label
    raise AssertionError("AGE_BANDS must end with an open band")  # pragma: no cover


def utc_date(instant: Column) -> Column:
    """The UTC calendar date of a timestamp column, whatever the session time zone."""
    return F.date_from_unix_date(F.floor(F.unix_seconds(instant) / _SECONDS_PER_DAY).cast("int"))


def identifiant(user: Column) -> Column:
    """The profile's identity, ``login.uuid``, as column ``uuid``."""
    return user.getField("login").getField("uuid").alias("uuid")


def email_domain(user: Column) -> Column:
    """The lower-cased part of the e-mail after its last ``@`` (null without one), as ``email_domain``."""
    email = strip_column(user.getField("email"))
    domain = F.lower(F.substring_index(email, "@", -1))
    return F.when(email.contains("@") & (domain != F.lit("")), domain).alias("email_domain")


def age_at(birth: Column, on: Column) -> Column:
    """Completed years between the UTC date of a birth instant and the date column ``on``.

    The calendar rule, not days / 365: one year less until the birthday comes that year. Someone born
    on 29 February turns a year older on 1 March in common years.
    """
    born = utc_date(birth)
    birthday_to_come = (F.month(born) > F.month(on)) | (
        (F.month(born) == F.month(on)) & (F.dayofmonth(born) > F.dayofmonth(on))
    )
    return F.year(on) - F.year(born) - F.when(birthday_to_come, 1).otherwise(0)


def birth(user: Column) -> Column:
    """The instant of birth (``dob.date``)."""
    return valid_instant(user.getField("dob").getField("date"))


def age(user: Column, on: Column) -> Column:
    """The exact age in years on the date ``on`` from ``dob.date``, as column ``age``."""
    return age_at(birth(user), on).alias("age")


def age_band_column(age_years: Column) -> Column:
    """The ``AGE_BANDS`` label of an age column (null for a null age); same boundaries as ``age_band_of``."""
    label = F.lit(None).cast("string")
    for name, _, upper in reversed(AGE_BANDS):  # built inside out, so the first band is tested first
        in_band = age_years.isNotNull() if upper is None else age_years < F.lit(upper)
        label = F.when(in_band, F.lit(name)).otherwise(label)
    return label


def age_band(user: Column, on: Column) -> Column:
    """The age band on the date ``on``, as column ``age_band``."""
    return age_band_column(age_at(birth(user), on)).alias("age_band")


def full_address(user: Column) -> Column:
    """``"<number> <street name>, <city>, <state>, <postcode>, <country>"`` as column ``full_address``.

    Parts are stripped (the API pads some street names); a missing part is left out with its separator.
    """
    location = user.getField("location")
    street = location.getField("street")
    return F.concat_ws(
        ", ",
        F.concat_ws(" ", street.getField("number").cast("string"), strip_column(street.getField("name"))),
        *(strip_column(location.getField(part)) for part in ("city", "state", "postcode", "country")),
    ).alias("full_address")


def country(user: Column) -> Column:
    """The country name of the location, stripped, as column ``country``."""
    return strip_column(user.getField("location").getField("country")).alias("country")


def nationality(user: Column) -> Column:
    """The nationality code (``nat``), as column ``nationality``."""
    return user.getField("nat").alias("nationality")


def gender(user: Column) -> Column:
    """The gender, as column ``gender``."""
    return user.getField("gender").alias("gender")


def registration_date(user: Column) -> Column:
    """The UTC date of ``registered.date``, as column ``registration_date``."""
    return utc_date(valid_instant(user.getField("registered").getField("date"))).alias("registration_date")


def event_time(envelope: Column) -> Column:
    """An envelope's ``fetched_at``: the event time both layers window on."""
    return valid_instant(envelope.getField("fetched_at"))


def event_date(envelope: Column) -> Column:
    """The UTC date of an envelope's ``fetched_at``: the date a profile's age is taken at."""
    return utc_date(event_time(envelope))


def transform_profiles(
    envelopes: DataFrame, pseudonymization_key: bytes, carry: Sequence[str] = ()
) -> DataFrame:
    """The transformed, pseudonymized profiles (``PROFILE_COLUMNS``, then the ``carry`` columns of the
    input unchanged) of valid envelopes.

    Input: records of ``core.parsing.valid_envelopes`` (column ``envelope`` plus ``partition`` and
    ``offset``); a record without an envelope gives a row of nulls but for the carried columns. Ages
    are taken at each profile's event date (``event_date``): the age it had when it was fetched, the
    same in both layers whatever the batching, and the same when a batch is replayed. E-mail, phone,
    cell and address leave only as pseudonyms; names are not carried.
    """
    return envelopes.select(*_profile_columns(pseudonymization_key), *carry)


@functools.cache  # built once per key and reused on every frame: thousands of calls into the JVM each time
def _profile_columns(pseudonymization_key: bytes) -> tuple[Column, ...]:
    """The expressions of ``PROFILE_COLUMNS`` over an ``envelope`` column."""
    envelope = F.col("envelope")
    user = envelope.getField("user")
    on = event_date(envelope)
    return (
        identifiant(user),
        event_time(envelope).alias("fetched_at"),
        envelope.getField("source").alias("source"),
        gender(user),
        country(user),
        nationality(user),
        email_domain(user),
        age(user, on),
        age_band(user, on),
        registration_date(user),
        pseudonym_column(user.getField("email"), pseudonymization_key, "email").alias("email_pseudonym"),
        pseudonym_column(user.getField("phone"), pseudonymization_key).alias("phone_pseudonym"),
        pseudonym_column(user.getField("cell"), pseudonymization_key).alias("cell_pseudonym"),
        pseudonym_column(full_address(user), pseudonymization_key).alias("address_pseudonym"),
        F.col("partition"),
        F.col("offset"),
    )


@functools.cache
def old_enough(minimum_age: int) -> Column:
    """Whether a transformed profile is at least ``minimum_age``; false without an age (it cannot be
    shown to be old enough)."""
    return F.coalesce(F.col("age") >= F.lit(minimum_age), F.lit(False))


def split_by_minimum_age(profiles: DataFrame, minimum_age: int) -> tuple[DataFrame, DataFrame]:
    """The profiles aged at least ``minimum_age`` (kept) and the others (excluded, only to be counted).

    A profile without an age is excluded: it cannot be shown to be old enough.
    """
    adult = old_enough(minimum_age)
    return profiles.where(adult), profiles.where(~adult)
