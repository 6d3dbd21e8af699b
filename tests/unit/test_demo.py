"""The demo's wiring: its processes run the archive on the demo schedule and say what appears when."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from batch_layer.schedule import next_run
from core.settings import Settings
from infra.demo import Demo, demo_processes


def test_every_demo_process_runs_on_the_demo_schedule(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"dagster_home": tmp_path / "dagster"})}
    )
    processes = demo_processes(settings)

    assert [p.name for p in processes] == ["producer", "speed layer", "dagster", "dashboard"]
    for process in processes:
        assert process.extra_env["USERPULSE_BATCH_LAYER__ARCHIVE_SCHEDULE"] == settings.demo.archive_schedule
    # Production's schedule is untouched: only the demo's processes get the override.
    assert settings.batch_layer.archive_schedule == "*/15 * * * *"


def test_the_banner_says_when_the_first_batch_view_comes(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"dagster_home": tmp_path / "dagster"})}
    )
    now = datetime(2026, 1, 1, 10, 7, 12, tzinfo=UTC)
    lines = dict(Demo(settings).what_appears_when(now))

    assert "archive at 10:08:00 UTC" in lines["first batch view"]
    assert "'* * * * *'" in lines["the merge moving"]


def test_next_run_follows_the_cron_expression_in_utc() -> None:
    moment = datetime(2026, 1, 1, 10, 7, 12, tzinfo=UTC)
    assert next_run("*/15 * * * *", moment) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert next_run("* * * * *", moment) == datetime(2026, 1, 1, 10, 8, tzinfo=UTC)
    assert next_run("30 3 * * *", moment) == datetime(2026, 1, 2, 3, 30, tzinfo=UTC)
