"""Keyed pseudonyms: HMAC-SHA256 test vectors, normalization, and Python and Spark giving the same digest."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from core.pseudonymization import (
    WHITESPACE,
    Normalization,
    blank_column,
    hmac_sha256_hex,
    hmac_sha256_hex_column,
    normalize,
    padded_keys,
    pseudonym,
    pseudonym_column,
    strip_column,
)

# RFC 4231, test cases 2 (a key shorter than the block) and 6 (a key longer than the block).
RFC4231_CASE_2 = (b"Jefe", b"what do ya want for nothing?")
RFC4231_CASE_2_HMAC = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
RFC4231_CASE_6 = (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
RFC4231_CASE_6_HMAC = "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"

KEYS: dict[str, bytes] = {
    "short": b"Jefe",
    "block size": bytes(range(64)),
    "one over block size": bytes(range(65)),
    "long": "clé très longue, ключ, کلید ".encode() * 8,
}
VALUES: list[str | None] = [
    "leon.nichols@example.com",
    "  Leon.Nichols@Example.COM\t\n",
    "ysn.khmrw@example.com",
    "041-98901015",
    "(096) G52-8383",
    "8930 هویزه, خوی, قزوین, 74966, Iran",  # Persian
    "9797 Провулок Дежньова, Рівне, Львівська, 97809, Україна",  # Cyrillic
    "ΣΟΦΊΑ@Example.gr",
    "6335 Rua São Paulo, Paulo Afonso, Acre, 35087, Brazil",
    "\u00a0+7 495 123\u2003",  # Unicode spaces are kept by both
    "",
    " \t ",
    None,
]


def test_rfc4231_vectors_in_python() -> None:
    assert hmac_sha256_hex(RFC4231_CASE_2[1], RFC4231_CASE_2[0]) == RFC4231_CASE_2_HMAC
    assert hmac_sha256_hex(RFC4231_CASE_6[1], RFC4231_CASE_6[0]) == RFC4231_CASE_6_HMAC
    assert pseudonym("what do ya want for nothing?", b"Jefe") == RFC4231_CASE_2_HMAC


def test_rfc4231_vectors_in_spark(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [(RFC4231_CASE_2[1].decode(), RFC4231_CASE_6[1].decode())],
        "short_key_message string, long_key_message string",
    )
    row = frame.select(
        hmac_sha256_hex_column(F.col("short_key_message"), RFC4231_CASE_2[0]).alias("case_2"),
        hmac_sha256_hex_column(F.col("long_key_message"), RFC4231_CASE_6[0]).alias("case_6"),
        pseudonym_column(F.col("short_key_message"), b"Jefe", "email").alias("case_2_pseudonym"),
    ).first()
    assert row is not None
    assert row.asDict() == {
        "case_2": RFC4231_CASE_2_HMAC,
        "case_6": RFC4231_CASE_6_HMAC,
        "case_2_pseudonym": RFC4231_CASE_2_HMAC,
    }


def test_padded_keys_follow_rfc2104() -> None:
    inner, outer = padded_keys(b"Jefe")
    assert inner == bytes(b ^ 0x36 for b in b"Jefe") + b"\x36" * 60
    assert outer == bytes(b ^ 0x5C for b in b"Jefe") + b"\x5c" * 60
    long_key = b"k" * 65
    assert padded_keys(long_key)[0][:32] == bytes(b ^ 0x36 for b in hashlib.sha256(long_key).digest())


@pytest.mark.parametrize(
    ("value", "normalization", "expected"),
    [
        ("  Leon.Nichols@Example.COM\t\n", "email", "leon.nichols@example.com"),
        ("  Leon.Nichols@Example.COM\t\n", "text", "Leon.Nichols@Example.COM"),
        ("\t(096) G52-8383 ", "text", "(096) G52-8383"),
        ("Rua São Paulo ", "text", "Rua São Paulo"),
        ("\u00a0x\u00a0", "text", "\u00a0x\u00a0"),  # only ASCII whitespace is stripped, as in Spark
        (" \t\r\n\f\v", "text", None),
        ("", "email", None),
        (None, "email", None),
    ],
)
def test_normalize(value: str | None, normalization: Normalization, expected: str | None) -> None:
    assert normalize(value, normalization) == expected


def test_pseudonym_is_the_hmac_of_the_normalized_utf8_value() -> None:
    key = KEYS["long"]
    value = "  Ysn.Khmrw@Example.com "
    expected = hmac.new(key, b"ysn.khmrw@example.com", hashlib.sha256).hexdigest()
    assert pseudonym(value, key, "email") == expected
    assert pseudonym("هویزه", key) == hmac.new(key, "هویزه".encode(), hashlib.sha256).hexdigest()
    assert pseudonym(value, key, "text") != expected  # text keeps the case
    assert pseudonym(value, b"another key", "email") != expected
    assert pseudonym(" ", key) is None
    assert pseudonym(None, key) is None


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        pseudonym("x", b"")
    with pytest.raises(ValueError, match="empty"):
        pseudonym_column(F.col("x"), b"")


@pytest.mark.parametrize("key_name", list(KEYS))
def test_spark_and_python_give_the_same_pseudonyms(spark: SparkSession, key_name: str) -> None:
    key = KEYS[key_name]
    frame = spark.createDataFrame(
        [(index, value) for index, value in enumerate(VALUES)], "index int, value string"
    )
    rows = frame.select(
        "index",
        pseudonym_column(F.col("value"), key, "email").alias("email"),
        pseudonym_column(F.col("value"), key, "text").alias("text"),
    ).collect()
    spark_digests = {row["index"]: (row["email"], row["text"]) for row in rows}
    python_digests = {
        index: (pseudonym(value, key, "email"), pseudonym(value, key, "text"))
        for index, value in enumerate(VALUES)
    }
    assert spark_digests == python_digests
    # Not vacuous: all but the three blank values have digests, and equal values after normalization agree.
    assert sum(digest is not None for digest, _ in python_digests.values()) == len(VALUES) - 3
    assert python_digests[0][0] == python_digests[1][0]
    assert python_digests[0][1] != python_digests[1][1]


STRIP_CASES: list[str | None] = [
    "Rua São Paulo",
    "Rua São Paulo ",
    "\tRua São Paulo",
    "\vx\f",
    "in  side",
    "\u00a0x\u2003",  # Unicode spaces are not ASCII whitespace: kept
    "x\r\n",
    "A" * 600 + "\n",  # a long token with a trailing newline
    "A" * 600,
    " ",
    WHITESPACE,
    "",
    None,
]


def test_strip_and_blank_columns_agree_with_python(spark: SparkSession) -> None:
    frame = spark.createDataFrame(list(enumerate(STRIP_CASES)), "index int, value string")
    rows = frame.select(
        "index", strip_column(F.col("value")).alias("stripped"), blank_column(F.col("value")).alias("blank")
    ).collect()

    by_index = {row["index"]: (row["stripped"], row["blank"]) for row in rows}
    stripped = {i: None if value is None else value.strip(WHITESPACE) for i, value in enumerate(STRIP_CASES)}
    expected = {i: (value, not value) for i, value in stripped.items()}
    assert by_index == expected
    assert sum(blank for _, blank in expected.values()) == 4  # " ", WHITESPACE, "" and None
