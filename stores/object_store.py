"""The S3-compatible object store of a lake and checkpoints at ``s3a://`` locations, reached without
Spark (Spark reaches it through Hadoop's S3A with the same settings, ``ObjectStoreSettings.hadoop_conf``):
Arrow's file systems open any location.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pyarrow import fs

from core.settings import ObjectStoreSettings, PathSettings


def s3_options(store: ObjectStoreSettings) -> dict[str, Any]:
    """Arrow's ``S3FileSystem`` options for the object store Spark reaches as ``s3a://``."""
    options: dict[str, Any] = {
        "region": store.region,
        "force_virtual_addressing": not store.path_style_access,
    }
    if store.endpoint:
        endpoint = urlsplit(store.endpoint)
        options["endpoint_override"] = endpoint.netloc
        options["scheme"] = endpoint.scheme
    if store.access_key is not None and store.secret_key is not None:
        options["access_key"] = store.access_key
        options["secret_key"] = store.secret_key.get_secret_value()
    return options


def file_system(location: str, store: ObjectStoreSettings) -> tuple[fs.FileSystem, str]:
    """The file system of ``location`` and the location's path in it."""
    parts = urlsplit(location)
    if parts.scheme == "s3a":
        return fs.S3FileSystem(**s3_options(store)), f"{parts.netloc}{parts.path}"
    return fs.FileSystem.from_uri(location)


def buckets_of(paths: PathSettings) -> list[str]:
    """The buckets of the lake and checkpoint locations that are on the object store (``s3a://``)."""
    locations = (paths.lake_dir, paths.checkpoints_dir)
    return sorted({urlsplit(location).netloc for location in locations if location.startswith("s3a://")})
