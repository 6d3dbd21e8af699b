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


def failure_of(arguments: list[str], environment: dict[str, str], exit_code: int) -> str:
    """Run the real command line in a subprocess, as a user runs it (no terminal, no stdin), check it
    ended with ``exit_code`` and no traceback, and return what it said (stderr)."""
    finished = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env={**os.environ, "USERPULSE_SECRETS__DEVELOPMENT_MODE": "true", **environment},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == exit_code, finished.stderr
    assert "Traceback" not in finished.stderr
    return finished.stderr


@pytest.mark.parametrize(("arguments", "environment", "named"), CASES, ids=lambda case: str(case))
def test_bad_input_is_a_short_usage_error(
    arguments: list[str], environment: dict[str, str], named: str
) -> None:
    said = failure_of(arguments, environment, exit_code=2)
    assert named in said.replace("\n", "").replace("│", "").replace(" ", "") or named in said


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
    said = failure_of(arguments, environment, exit_code=1)
    [line] = [line for line in said.splitlines() if line.startswith("unreachable:")]
    assert named in line and "userpulse stack status" in line
