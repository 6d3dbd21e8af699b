"""Bad arguments and settings: a usage error in a line or two (exit 2), never a traceback, and nothing
done; a service that does not answer: one line naming it and its address (exit 1).

The usage errors run the command line's entry point in this process (a few milliseconds each); the
services that do not answer run it in a subprocess, as a user would, since what they print comes from
the drivers' own logging too."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from core.settings import get_settings
from userpulse import cli

UUID = "00000000-0000-4000-8000-000000000001"

# Every service unreachable at once (port 1 is never served): an argument that slipped through
# validation would end in "unreachable" (exit 1), not hang or pass.
NO_SERVICES = {
    "USERPULSE_KAFKA__PORT": "1",
    "USERPULSE_CASSANDRA__PORT": "1",
    "USERPULSE_MONGO__PORT": "1",
    "USERPULSE_KAFKA__BOOTSTRAP_TIMEOUT_S": "1",
    "USERPULSE_SECRETS__DEVELOPMENT_MODE": "true",
}


def invalid_setting(variable: str, value: str) -> tuple[list[str], dict[str, str], str]:
    """A case of one invalid setting, read by any command: the message must name the variable."""
    return ["views"], {variable: value}, variable


# (arguments, environment, what the message must name)
USAGE_ERRORS = [
    # produce
    (["produce", "--rate", "abc"], {}, "--rate"),
    (["produce", "--rate", "5/min"], {}, "--rate"),
    (["produce", "--rate", "nan"], {}, "--rate"),
    (["produce", "--rate", "inf"], {}, "--rate"),
    (["produce", "--rate", "-3/s"], {}, "--rate"),
    (["produce", "--rate", "0/s"], {}, "--rate"),
    (["produce", "--count", "-5"], {}, "--count"),
    (["produce", "--count", "0"], {}, "--count"),
    (["produce", "--batch-size", "0"], {}, "--batch-size"),
    (["produce", "--batch-size", "5001"], {}, "--batch-size"),
    (["produce"], {"USERPULSE_PRODUCER__BATCH_SIZE": "0"}, "USERPULSE_PRODUCER__BATCH_SIZE"),
    (["produce", "--nat", ""], {}, "--nat"),
    (["produce", "--nat", "XX"], {}, "XX"),
    (["produce", "--source", "bogus"], {}, "--source"),
    (["produce", "--topic", "bad topic!"], {}, "--topic"),
    (["produce", "--log-level", "LOUD"], {}, "--log-level"),
    # speed layer
    (["speed", "--log-level", "LOUD"], {}, "--log-level"),
    (["speed", "--topic", ""], {}, "--topic"),
    # profiles
    (["profile", "get", ""], {}, "notaprofileuuid"),
    (["profile", "get", "not-a-uuid"], {}, "notaprofileuuid"),
    (["profile", "delete", "not-a-uuid"], {}, "notaprofileuuid"),
    (["profile", "history", UUID, "--since", "2026-13-01"], {}, "--since"),
    (["profile", "update", UUID, "--set", "nonsense"], {}, "--set"),
    (["profile", "update", UUID], {}, "nothingtochange"),
    (["forget"], {}, "uuidor--email"),
    (["forget", "not-a-uuid"], {}, "notaprofileuuid"),
    # views and the operator's commands
    (["views", "--dimension", "planet"], {}, "planet"),
    (["views", "--range", "yesterday"], {}, "--range"),
    (["views", "--range", "2026-01-02..2026-01-01"], {}, "endsbeforeitstarts"),
    (["batches", "--limit", "0"], {}, "--limit"),
    (["messages", "--partition", "-1"], {}, "--partition"),
    (["dead-letters", "list", "--limit", "0"], {}, "--limit"),
    (["dead-letters", "hourly", "--hours", "0"], {}, "--hours"),
    # batch layer
    (["batch", "recompute", "--from", "2026-02-30"], {}, "--from"),
    (["batch", "maintain", "--retention-hours", "-1"], {}, "--retention-hours"),
    # settings
    invalid_setting("USERPULSE_KAFKA__PORT", "abc"),
    invalid_setting("USERPULSE_KAFKA__PORT", "70000"),
    invalid_setting("USERPULSE_KAFKA__TOPIC_PARTITIONS", "0"),
    invalid_setting("USERPULSE_SPEED_LAYER__TRIGGER_INTERVAL", "banana"),
    invalid_setting("USERPULSE_CASSANDRA__CONNECT_TIMEOUT_S", "-1"),
    invalid_setting("USERPULSE_CASSANDRA__CONSISTENCY_LEVEL", "SOMETIMES"),
    invalid_setting("USERPULSE_RELIABILITY__OUTAGE_TOLERANCE_S", "-5"),
    invalid_setting("USERPULSE_SECRETS__DEVELOPMENT_MODE", "maybe"),
    invalid_setting("USERPULSE_MONGO__CONNECTION_URI", "http://user:pw@x"),
    # secrets refused
    (["produce"], {"USERPULSE_SECRETS__PSEUDONYMIZATION_KEY": ""}, "USERPULSE_SECRETS__PSEUDONYMIZATION_KEY"),
    (["produce"], {"USERPULSE_SECRETS__DEVELOPMENT_MODE": "false"}, "PSEUDONYMIZATION_KEY"),
]


@pytest.fixture
def fresh_process_state() -> Iterator[None]:
    """Settings read again from the environment, and the root logger as it was (``produce`` configures
    logging for its process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)


def run_entry_point(
    arguments: list[str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> int:
    """Run ``userpulse`` as its console script does, and return its exit code. Any exception other than
    an exit would be a traceback on the user's terminal."""
    for name, value in {**NO_SERVICES, **environment}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["userpulse", *arguments])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    return int(ended.value.code or 0)


@pytest.mark.parametrize(("arguments", "environment", "named"), USAGE_ERRORS, ids=lambda case: str(case))
def test_bad_input_is_a_short_usage_error(
    arguments: list[str],
    environment: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fresh_process_state: None,
) -> None:
    assert run_entry_point(arguments, environment, monkeypatch) == 2
    said = capsys.readouterr().err
    assert "Traceback" not in said
    # Rich draws usage errors in a box, wrapped to the terminal's width.
    flattened = said.replace("\n", "").replace("│", "").replace(" ", "").replace("'", "")
    assert named.replace(" ", "") in flattened, said
    for name, value in environment.items():
        if cli.is_secret_setting(name) and value:
            assert value not in said, "a secret setting's value was echoed"


def test_a_secret_setting_is_never_echoed() -> None:
    assert cli.is_secret_setting("USERPULSE_MONGO__CONNECTION_URI")
    assert cli.is_secret_setting("USERPULSE_SECRETS__PSEUDONYMIZATION_KEY")
    assert cli.is_secret_setting("USERPULSE_CASSANDRA__PASSWORD")
    assert not cli.is_secret_setting("USERPULSE_KAFKA__PORT")


# Each case fails at the first service its command reaches, so no running stack is needed (``produce``
# with Cassandra down reaches Kafka first: tests/integration/ingestion/test_producer.py has that one).
UNREACHABLE = [
    (["views"], {"USERPULSE_CASSANDRA__PORT": "1"}, "Cassandra at 127.0.0.1:1 did not answer"),
    (["batches"], {"USERPULSE_CASSANDRA__PORT": "1"}, "Cassandra at 127.0.0.1:1 did not answer"),
    (
        ["produce", "--count", "3", "--source", "synthetic"],
        {"USERPULSE_KAFKA__PORT": "1"},
        "Kafka at 127.0.0.1:1 did not answer",
    ),
    (["topics"], {"USERPULSE_KAFKA__PORT": "1"}, "Kafka at 127.0.0.1:1 did not answer"),
    (["dead-letters", "reasons"], {"USERPULSE_MONGO__PORT": "1"}, "MongoDB at 127.0.0.1:1 did not answer"),
    (["profile", "get", UUID], {"USERPULSE_CASSANDRA__PORT": "1"}, "Cassandra at 127.0.0.1:1 did not answer"),
]


@pytest.mark.parametrize(("arguments", "environment", "named"), UNREACHABLE, ids=lambda case: str(case))
def test_a_service_that_does_not_answer_is_one_line_naming_its_address(
    arguments: list[str], environment: dict[str, str], named: str
) -> None:
    # Port 1 is never served: the connection is refused at once, as for a stopped service.
    finished = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", *arguments],
        env={**os.environ, "USERPULSE_SECRETS__DEVELOPMENT_MODE": "true", **environment},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 1, finished.stderr
    assert "Traceback" not in finished.stderr
    [line] = [line for line in finished.stderr.splitlines() if line.startswith("unreachable:")]
    assert named in line and "userpulse stack status" in line
