"""Dashboard first paint in a real browser: how long a user waits for the headline figures.

    .venv/bin/userpulse demo &                 # the load: the whole pipeline on this machine
    .venv/bin/python bench/bench_dashboard_paint.py [--url http://127.0.0.1:5006/] [--repeat 10]

Debian's Chromium, driven by Playwright, opens the dashboard ``--repeat`` times, each in a fresh browser
context (no cache, as a first visit), and times from navigation start to the ``load`` event, and from
``load`` to the headline's profile count being visible. The same is timed on a floor page: a one-pane
Panel app with the same headline markup, served by its own process on this machine in the same run, so
the dashboard's figures read as ratios against what Panel itself costs here. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from core.settings import get_settings

CHROMIUM = Path("/usr/bin/chromium")
HEADLINE = "kpi-profiles"

FLOOR_APP = """
import sys
import panel as pn
page = lambda: pn.template.BootstrapTemplate(
    title="floor",
    main=[pn.pane.HTML('<div data-testid="kpi-profiles"><div class="value">1</div></div>')],
)
pn.serve({"/": page}, address="127.0.0.1", port=int(sys.argv[1]), show=False)
"""
"""The least a Panel page with the same template costs: no data, no refresh."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def time_paints(browser: Browser, url: str, repeat: int) -> dict[str, float]:
    """Median and p95 (seconds) of navigation -> load, load -> headline visible, and the two together."""
    loads, headlines, totals = [], [], []
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1400, "height": 1900})
        page = context.new_page()
        started = time.monotonic()
        page.goto(url, wait_until="load", timeout=120_000)
        loaded = time.monotonic()
        page.get_by_test_id(HEADLINE).locator(".value").wait_for(state="visible", timeout=120_000)
        shown = time.monotonic()
        loads.append(loaded - started)
        headlines.append(shown - loaded)
        totals.append(shown - started)
        context.close()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        }

    return {
        "navigation_to_load_s": summary(loads),
        "load_to_headline_s": summary(headlines),
        "navigation_to_headline_s": summary(totals),
    }


def main() -> None:
    serving = get_settings().serving
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=f"http://{serving.host}:{serving.port}/")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()

    wait_until_answering(args.url)
    floor_port = free_port()
    floor = subprocess.Popen(
        [sys.executable, "-c", FLOOR_APP, str(floor_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        floor_url = f"http://127.0.0.1:{floor_port}/"
        wait_until_answering(floor_url)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            dashboard = time_paints(browser, args.url, args.repeat)
            floor_times = time_paints(browser, floor_url, args.repeat)
            browser.close()
    finally:
        floor.terminate()
        floor.wait(timeout=30)
    ratio = {
        name: round(dashboard[name]["p50"] / max(floor_times[name]["p50"], 0.01), 2) for name in dashboard
    }
    print(
        json.dumps(
            {
                "url": args.url,
                "repeat": args.repeat,
                "load_average": os.getloadavg(),
                "dashboard": dashboard,
                "floor_panel_page": floor_times,
                "dashboard_over_floor_p50": ratio,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
