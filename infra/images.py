"""The services' container images, at the versions the local stack runs.

The local stack installs Kafka and Cassandra from Maven Central at the versions of ``infra/jvm/pom.xml``;
the Docker paths (``infra/docker-compose.yml`` and the tests' testcontainers) run the same versions, so
a run on either tests the same servers. FerretDB stands for MongoDB locally and speaks MongoDB 7.0's
protocol, so the containers run MongoDB 7.0.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from functools import cache
from pathlib import Path

POM = Path(__file__).parent / "jvm" / "pom.xml"
_MAVEN = "{http://maven.apache.org/POM/4.0.0}"

MONGO_IMAGE = "mongo:7.0"


@cache
def stack_version(component: str) -> str:
    """The version of ``component`` (``kafka``, ``cassandra``) that the local stack installs."""
    properties = ElementTree.parse(POM).getroot().find(f"{_MAVEN}properties")
    version = properties.find(f"{_MAVEN}{component}.version") if properties is not None else None
    if version is None or not version.text:
        raise KeyError(f"{POM} has no {component}.version property")
    return version.text.strip()


def kafka_image() -> str:
    """Apache Kafka's own image (KRaft), the local stack's version."""
    return f"apache/kafka:{stack_version('kafka')}"


def cassandra_image() -> str:
    """The Cassandra image of the local stack's version."""
    return f"cassandra:{stack_version('cassandra')}"
