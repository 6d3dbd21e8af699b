"""``userpulse demo`` end to end: every part starts, data flows to the dashboard, the Lambda merge shows
in a browser (both layers' shares, then a batch cutoff that moves), Ctrl-C stops it all.

The demo runs on the test's own topic, keyspace, database, folders and ports, on the already running
stack (which it must leave running: it did not start it).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from core.settings import Settings
from infra.stack import LocalStack
from stores.connections import cassandra_session
from tests.integration.support.processes import cli_environment, free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
MERGE_WITHIN_S = 600
"""From ``userpulse demo`` to a batch cutoff that moved once: about 5 minutes on 2 cores with the test
run's own Spark session beside it (the README's "What appears when"), with room for a busier machine."""
STOP_WITHIN_S = 240
"""From Ctrl-C to every part of the demo stopped."""


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def speed_batches(settings: Settings) -> int:
    """Micro-batches the demo's speed layer has recorded (0 while its tables do not exist yet)."""
    cluster, session = cassandra_session(settings)
    try:
        rows = session.execute(
            f"SELECT batch_id FROM {settings.cassandra.keyspace}.stream_batches WHERE job = 'speed' LIMIT 1"
        )
        return len(list(rows))
    except Exception:  # the job has not created its keyspace/tables yet
        return 0
    finally:
        cluster.shutdown()


SHARES = re.compile(r"Share of the counts: \d+% batch \(([\d,]+)\), \d+% speed \(([\d,]+)\)")
CUTOFF = re.compile(r"complete up to (\S+ \S+) UTC")


@dataclass(frozen=True)
class Freshness:
    """What the dashboard's freshness panel says about the merge."""

    batch: int
    speed: int
    cutoff: str | None


def freshness_panel(page: Page) -> Freshness:
    text = "\n".join(page.locator("li").all_inner_texts())
    shares, cutoff = SHARES.search(text), CUTOFF.search(text)
    batch, speed = (int(g.replace(",", "")) for g in shares.groups()) if shares else (0, 0)
    return Freshness(batch, speed, cutoff.group(1) if cutoff else None)


def watch_the_merge(url: str, started: float, demo: subprocess.Popen[str], output_dir: Path) -> None:
    """In a browser, as a user would: within ``MERGE_WITHIN_S`` of the start, the freshness panel shows
    both layers' shares and then a batch cutoff that moved; a screenshot of each moment is kept."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(url)
        first: Freshness | None = None
        seen: list[tuple[float, Freshness]] = []
        while True:
            now = freshness_panel(page)
            elapsed = time.monotonic() - started
            seen.append((round(elapsed), now))
            if first is None and now.batch > 0 and now.speed > 0 and now.cutoff:
                first = now
                page.screenshot(path=str(output_dir / "demo-merge.png"), full_page=True)
            elif first is not None and now.cutoff not in (None, first.cutoff) and now.batch and now.speed:
                page.screenshot(path=str(output_dir / "demo-cutoff-moved.png"), full_page=True)
                break
            if elapsed > MERGE_WITHIN_S or demo.poll() is not None:
                page.screenshot(path=str(output_dir / "demo-timeout.png"), full_page=True)
                pytest.fail(f"no moving merge within {MERGE_WITHIN_S} s of the start (seen: {seen[-5:]})")
            page.wait_for_timeout(2000)
        (output_dir / "demo-merge.txt").write_text(
            "\n".join(f"{at:>4} s  {f}" for at, f in seen if f.batch or f.cutoff) + "\n"
        )
        browser.close()


# The run's default timeout (600 s) is shorter than this test's own budget.
@pytest.mark.timeout(MERGE_WITHIN_S + STOP_WITHIN_S + 60)
def test_the_demo_runs_every_part_shows_the_merge_and_ctrl_c_stops_them_all(
    stack_settings: Settings, own_stores: Callable[..., Settings], tmp_path: Path, output_dir: Path
) -> None:
    settings = own_stores("demo")  # its topics, keyspace, database and checkpoints, removed after it
    dashboard_port, dagster_port = free_port(), free_port()
    environment = cli_environment(
        settings,
        USERPULSE_PATHS__STACK_DIR=str(tmp_path / "stack"),
        USERPULSE_PATHS__LAKE_DIR=str(tmp_path / "lake"),
        USERPULSE_PATHS__DAGSTER_HOME=str(tmp_path / "dagster"),
        USERPULSE_SERVING__PORT=str(dashboard_port),
        USERPULSE_DEMO__DAGSTER_PORT=str(dagster_port),
        USERPULSE_DEMO__PRODUCER_SOURCE="synthetic",
        USERPULSE_DEMO__PRODUCER_RATE="50/s",
        USERPULSE_SPARK__DRIVER_MEMORY="1g",
    )
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "userpulse.cli", "demo"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while speed_batches(settings) == 0 or not port_answers(dashboard_port):
            assert demo.poll() is None, f"the demo exited early:\n{demo.stdout.read() if demo.stdout else ''}"
            assert time.monotonic() < deadline, "the demo did not get data to the speed layer in 300 s"
            time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{dagster_port}/server_info", timeout=10) as response:
            assert "dagster_webserver_version" in json.load(response)
        with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/", timeout=10) as response:
            assert response.status == 200
        watch_the_merge(f"http://127.0.0.1:{dashboard_port}/", started, demo, output_dir)

        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = demo.communicate(timeout=STOP_WITHIN_S)
    finally:
        if demo.poll() is None:  # the test failed: stop the demo as a user would, so that it stops its parts
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                demo.kill()  # its parts get SIGTERM when it dies (see infra.demo.child_setup)

    assert demo.returncode == 0, output
    assert f"http://127.0.0.1:{dashboard_port}/" in output
    # Each part stopped cleanly on its SIGTERM: the producer flushed, the speed layer ended its batch.
    for part in ("dashboard", "dagster", "speed layer", "producer"):
        assert f"{part}: stopped (exit code 0)" in output, output
    assert not port_answers(dashboard_port) and not port_answers(dagster_port)
    assert LocalStack(stack_settings).all_answering(), "the demo stopped a stack it did not start"
    speed_log = (tmp_path / "stack" / "demo" / "speed.log").read_text()
    assert "speed layer stopped" in speed_log and "speed layer failed" not in speed_log, speed_log[-3000:]
