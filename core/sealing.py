"""Crypto-shredding: a profile's direct identifiers sealed with its subject's own data key.

The topic and the Delta archive are immutable, so an erasure cannot rewrite every copy of a profile in
them. Instead the producer seals the direct identifiers (name, e-mail, phone, cell, national id,
street, login username, picture URLs) with AES-256-GCM under a key that belongs to that one subject
(``stores.subject_keys``); erasing the subject deletes the key, and every sealed copy anywhere becomes
unreadable at once.

The sealed token is ``base64(nonce || ciphertext || tag)`` with a 12-byte nonce and the uuid as
associated data (a token cannot be moved to another subject). That is the layout Spark's built-in
``aes_decrypt(..., 'GCM', 'DEFAULT', aad)`` reads, so the layers unseal without a Python UDF.
Python (``seal_identifiers``/``unseal_identifiers``) is the reference the Spark column is tested against.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from core.schema import CORRUPT_FIELD, PROFILE_SCHEMA

DATA_KEY_BYTES = 32
"""AES-256."""

NONCE_BYTES = 12
"""GCM's standard nonce length, the one Spark's ``aes_decrypt`` expects."""

SEALED_FIELDS: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("email",),
    ("phone",),
    ("cell",),
    ("id",),
    ("picture",),
    ("location", "street"),
    ("login", "username"),
)
"""Paths in the user object of the direct identifiers that leave the producer only sealed."""


def _token_field(path: tuple[str, ...]) -> str:
    """The field of the sealed JSON object that holds ``path`` (its last part: ``street``, ``username``)."""
    return path[-1]


def new_data_key() -> bytes:
    """A fresh random AES-256 key for one subject."""
    return os.urandom(DATA_KEY_BYTES)


def _aad(uuid: str) -> bytes:
    return uuid.encode("utf-8")


def split_identifiers(user: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The user without its direct identifiers, and those identifiers as the JSON plaintext a token
    seals."""
    remaining = copy.deepcopy(user)
    identifiers: dict[str, Any] = {}
    for path in SEALED_FIELDS:
        parent = remaining
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            identifiers[_token_field(path)] = parent.pop(path[-1])
    plaintext = json.dumps(identifiers, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return remaining, plaintext


def seal_identifiers(user: dict[str, Any], data_key: bytes) -> tuple[dict[str, Any], str]:
    """The user without its direct identifiers, and those identifiers sealed under ``data_key``."""
    remaining, plaintext = split_identifiers(user)
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + AESGCM(data_key).encrypt(nonce, plaintext, _aad(user["login"]["uuid"]))
    return remaining, base64.b64encode(sealed).decode("ascii")


def open_token(sealed: str, data_key: bytes, uuid: str) -> dict[str, Any] | None:
    """The identifiers sealed in a token, or None when it does not open (wrong key or uuid, tampered,
    not base64). Opened text that is no JSON object holds no identifiers, as Spark's parse of it says."""
    try:
        token = base64.b64decode(sealed)  # like Spark's unbase64, it skips what is not base64
        plaintext = AESGCM(data_key).decrypt(token[:NONCE_BYTES], token[NONCE_BYTES:], _aad(uuid))
    except (binascii.Error, ValueError, InvalidTag):
        return None
    try:
        identifiers = json.loads(plaintext)
    except ValueError:
        return {}
    return identifiers if isinstance(identifiers, dict) else {}


def put_back(user: dict[str, Any], identifiers: dict[str, Any]) -> dict[str, Any]:
    """The user with every sealed field taken from ``identifiers`` (absent there: absent), as
    ``with_identifiers`` does in Spark: never into a parent that is not there (Spark's ``withField``
    leaves a null struct null)."""
    restored = copy.deepcopy(user)
    for path in SEALED_FIELDS:
        parent: Any = restored
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        value = identifiers.get(_token_field(path))
        if value is None:
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    return restored


def unseal_identifiers(user: dict[str, Any], sealed: str, data_key: bytes) -> dict[str, Any]:
    """The user with its sealed identifiers put back; raises ``cryptography``'s ``InvalidTag`` if the
    token does not open (the key or the uuid does not match)."""
    identifiers = open_token(sealed, data_key, user["login"]["uuid"])
    if identifiers is None:
        raise InvalidTag()
    return put_back(user, identifiers)


def _identifiers_schema() -> StructType:
    """The Spark read schema of the sealed JSON object, taken from ``PROFILE_SCHEMA`` field by field."""
    fields = []
    for path in SEALED_FIELDS:
        field_type: Any = PROFILE_SCHEMA
        for part in path:
            field = field_type[part]
            field_type = field.dataType
        fields.append(field.__class__(_token_field(path), field_type, nullable=True))
    return StructType(fields)


IDENTIFIERS_SCHEMA: StructType = _identifiers_schema()
"""The sealed identifiers as Spark reads them once unsealed."""

IDENTIFIERS_READ_SCHEMA: StructType = StructType(
    [*IDENTIFIERS_SCHEMA.fields, StructField(CORRUPT_FIELD, StringType(), nullable=True)]
)
"""``IDENTIFIERS_SCHEMA`` with the corrupt-record field that tells a wrongly typed identifier."""


def opened_identifiers_text(sealed: Column, data_key: Column, uuid: Column) -> Column:
    """The JSON text sealed in a token; null when there is no key or the token does not open (wrong
    key, wrong uuid, tampered)."""
    token = F.unbase64(sealed)
    plaintext = F.try_aes_decrypt(token, data_key, F.lit("GCM"), F.lit("DEFAULT"), uuid.cast("binary"))
    return plaintext.cast("string")


def unsealed_identifiers_column(sealed: Column, data_key: Column, uuid: Column) -> Column:
    """The sealed identifiers as a struct of ``IDENTIFIERS_SCHEMA``; null when they do not open."""
    return F.from_json(opened_identifiers_text(sealed, data_key, uuid), IDENTIFIERS_SCHEMA)


def with_identifiers(user: Column, identifiers: Column) -> Column:
    """The user struct with the unsealed identifiers put back in their places."""
    restored = user
    for path in SEALED_FIELDS:
        restored = restored.withField(".".join(path), identifiers.getField(_token_field(path)))
    return restored
