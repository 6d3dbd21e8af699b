"""Bad arguments and settings: a usage error in a line or two (exit 2), never a traceback, and nothing
done; a service that does not answer: one line naming it and its address (exit 1). Each case runs the
real command line in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = [
    (["produce", "--rate", "abc"], {}, "--rate"),
    (["produce", "--rate", "5/min"], {}, "--rate"),
    (["produce", "--rate", "nan"], {}, "--rate"),
    (["produce", "--rate", "-3/s"], {}, "--rate"),
    (["produce", "--count", "-5"], {}, "--count"),
    (["produce", "--batch-size", "0"], {}, "--batch-size"),
    (["produce", "--batch-size", "5001"], {}, "--batch-size"),
    (["produce", "--topic", "bad topic!"], {}, "--topic"),
    (["produce", "--log-level", "LOUD"], {}, "--log-level"),
    (["speed", "--log-level", "LOUD"], {}, "--log-level"),
    (["speed", "--topic", ""], {}, "--topic"),
    (["profile", "get", ""], {}, "notaprofileuuid"),
    (["profile", "get", "not-a-uuid"], {}, "notaprofileuuid"),
    (["views"], {"USERPULSE_KAFKA__PORT": "abc"}, "USERPULSE_KAFKA__PORT"),
    (
        ["views"],
        {"USERPULSE_SPEED_LAYER__TRIGGER_INTERVAL": "banana"},
        "USERPULSE_SPEED_LAYER__TRIGGER_INTERVAL",
    ),
    (["views"], {"USERPULSE_CASSANDRA__CONNECT_TIMEOUT_S": "-1"}, "USERPULSE_CASSANDRA__CONNECT_TIMEOUT_S"),
]


def run_userpulse(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command line in a subprocess, as a user runs it (no terminal, no stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env={**os.environ, "USERPULSE_SECRETS__DEVELOPMENT_MODE": "true", **environment},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(("arguments", "environment", "named"), CASES, ids=lambda case: str(case))
def test_bad_input_is_a_short_usage_error(
    arguments: list[str], environment: dict[str, str], named: str
) -> None:
    finished = run_userpulse(arguments, environment)
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    assert (
        named in finished.stderr.replace("\n", "").replace("│", "").replace(" ", "")
        or named in finished.stderr
    )


UNREACHABLE = [
    (["views"], {"USERPULSE_CASSANDRA__PORT": "1"}, "Cassandra at 127.0.0.1:1 did not answer"),
    (
        ["produce", "--count", "3", "--source", "synthetic"],
        {"USERPULSE_KAFKA__PORT": "1"},
        "Kafka at 127.0.0.1:1 did not answer",
    ),
    (
        ["profile", "get", "00000000-0000-4000-8000-000000000001"],
        {"USERPULSE_CASSANDRA__PORT": "1"},
        "Cassandra at 127.0.0.1:1 did not answer",
    ),
]


@pytest.mark.parametrize(("arguments", "environment", "named"), UNREACHABLE, ids=lambda case: str(case))
def test_a_service_that_does_not_answer_is_one_line_naming_its_address(
    arguments: list[str], environment: dict[str, str], named: str
) -> None:
    # Port 1 is never served: the connection is refused at once, as for a stopped service.
    finished = run_userpulse(arguments, environment)
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr
    [line] = [line for line in finished.stderr.splitlines() if line.startswith("unreachable:")]
    assert named in line and "userpulse stack status" in line
