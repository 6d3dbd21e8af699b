"""Secure by default: the public default secrets are refused outside development mode."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from core import settings as settings_module
from core.settings import InsecureSettingsError, SecretSettings, ServingSettings, Settings
from serving.server import serve_dashboard


def test_the_default_pseudonymization_key_is_refused_outside_development_mode() -> None:
    with pytest.raises(InsecureSettingsError, match="USERPULSE_SECRETS__PSEUDONYMIZATION_KEY"):
        SecretSettings(development_mode=False).pseudonymization_key_bytes()
    with pytest.raises(InsecureSettingsError, match="empty"):
        SecretSettings(pseudonymization_key=SecretStr("")).pseudonymization_key_bytes()


def test_a_key_of_ones_own_is_used_as_is() -> None:
    assert SecretSettings(pseudonymization_key=SecretStr("k3y")).pseudonymization_key_bytes() == b"k3y"


def test_development_mode_allows_the_default_key_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "_warned_defaults", set())
    secrets = SecretSettings(development_mode=True)
    with caplog.at_level(logging.WARNING, logger="core.settings"):
        assert secrets.pseudonymization_key_bytes() == secrets.pseudonymization_key_bytes() != b""
    assert [r.getMessage() for r in caplog.records] == [
        "development mode: pseudonyms use the public default key (not for real data)"
    ]


@pytest.mark.parametrize("development_mode", [True, False])
def test_basic_auth_with_the_default_cookie_secret_is_refused_in_every_mode(development_mode: bool) -> None:
    settings = Settings(
        secrets=SecretSettings(development_mode=development_mode),
        serving=ServingSettings(basic_auth_username="ann", basic_auth_password=SecretStr("pw")),
    )
    with pytest.raises(InsecureSettingsError, match="USERPULSE_SERVING__COOKIE_SECRET"):
        serve_dashboard(settings)  # refused before it connects to anything


def test_the_command_line_refuses_in_one_line_without_a_traceback() -> None:
    environment = {**os.environ, "USERPULSE_SECRETS__DEVELOPMENT_MODE": "false"}
    environment.pop("USERPULSE_SECRETS__PSEUDONYMIZATION_KEY", None)
    finished = subprocess.run(
        [sys.executable, "-m", "userpulse.cli", "speed"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 2
    assert finished.stderr.startswith("refused: the pseudonymization key is the public default")
    assert "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1
