"""The demo's wiring: the archive on the demo schedule, what appears when, a batch layer that yields the
cores, and runs an earlier demo abandoned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from batch_layer.schedule import next_run
from core.settings import Settings
from infra.demo import Demo, demo_processes
from orchestration.runs import fail_abandoned_runs, job_in_flight


def test_every_demo_process_starts_the_archive_on_new_offsets(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"dagster_home": tmp_path / "dagster"})}
    )
    processes = demo_processes(settings)

    assert [p.name for p in processes] == ["producer", "speed layer", "dagster", "dashboard"]
    for process in processes:
        assert process.extra_env["USERPULSE_BATCH_LAYER__ARCHIVE_TRIGGER"] == "new_offsets"
        assert process.extra_env["USERPULSE_BATCH_LAYER__NEW_OFFSETS_CHECK_S"] == "10"
    # Only the batch runs get the quick JIT (short JVMs); the user's own Spark settings still win.
    quick_jit = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}
    spark_conf = {p.name: p.extra_env.get("USERPULSE_SPARK__CONF") for p in processes}
    assert json.loads(spark_conf.pop("dagster")) == quick_jit
    assert set(spark_conf.values()) == {None}
    own = {"spark.driver.extraJavaOptions": "-Xss4m", "spark.executor.memory": "1g"}
    tuned = settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": own})})
    dagster = next(p for p in demo_processes(tuned) if p.name == "dagster")
    assert json.loads(dagster.extra_env["USERPULSE_SPARK__CONF"]) == own
    # Production's trigger is untouched: only the demo's processes get the override.
    assert settings.batch_layer.archive_trigger == "schedule"
    assert settings.batch_layer.archive_schedule == "*/15 * * * *"


def test_the_banner_says_when_the_first_batch_view_comes(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"dagster_home": tmp_path / "dagster"})}
    )
    lines = dict(Demo(settings).what_appears_when())

    assert "an archive run starts within 10 s of Dagster being up" in lines["first batch view"]
    assert "as soon as that refresh is done" in lines["the merge moving"]


def test_next_run_follows_the_cron_expression_in_utc() -> None:
    moment = datetime(2026, 1, 1, 10, 7, 12, tzinfo=UTC)
    assert next_run("*/15 * * * *", moment) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert next_run("* * * * *", moment) == datetime(2026, 1, 1, 10, 8, tzinfo=UTC)
    assert next_run("30 3 * * *", moment) == datetime(2026, 1, 2, 3, 30, tzinfo=UTC)


def test_the_batch_layer_of_the_demo_yields_the_cores(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"dagster_home": tmp_path / "dagster"})}
    )
    niceness = {p.name: p.niceness for p in demo_processes(settings)}
    assert niceness == {
        "producer": 0,
        "speed layer": 0,
        "dagster": settings.demo.batch_niceness,
        "dashboard": 0,
    }
    assert settings.demo.batch_niceness > 0


def test_runs_a_stopped_dagster_left_in_flight_are_marked_failed(tmp_path: Path) -> None:
    assert fail_abandoned_runs(tmp_path / "never-started") == []
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        finished = create_run_for_test(instance, job_name="archive_topic", status=DagsterRunStatus.SUCCESS)
        left = create_run_for_test(instance, job_name="refresh_views", status=DagsterRunStatus.STARTED)
        assert job_in_flight(instance, "refresh_views")

        assert fail_abandoned_runs(tmp_path) == ["refresh_views"]

        assert not job_in_flight(instance, "refresh_views")
        statuses = {
            run_id: instance.get_run_by_id(run_id).status for run_id in (finished.run_id, left.run_id)
        }
        assert statuses == {finished.run_id: DagsterRunStatus.SUCCESS, left.run_id: DagsterRunStatus.FAILURE}
    finally:
        instance.dispose()


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_demo_killed_outright_takes_its_processes_with_it(tmp_path: Path) -> None:
    # A stand-in demo starts one process the way the demo does, prints its pid, and waits.
    stand_in = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from infra.demo import DemoProcess
        part = DemoProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                           Path({str(tmp_path / "sleeper.log")!r}), niceness=1)
        part.start()
        print(part.process.pid, flush=True)
        time.sleep(120)
        """
    )
    demo = subprocess.Popen([sys.executable, "-c", stand_in], stdout=subprocess.PIPE, text=True)
    child = -1
    try:
        assert demo.stdout is not None
        child = int(demo.stdout.readline())
        assert running(child)

        demo.send_signal(signal.SIGKILL)  # no chance to stop anything itself
        demo.wait()

        deadline = time.monotonic() + 10
        while running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(child), "the demo's process outlived the demo"
    finally:
        demo.kill()
        if child > 0 and running(child):
            os.kill(child, signal.SIGKILL)
