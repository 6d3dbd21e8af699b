"""``userpulse demo``: the whole pipeline on one machine, stopped as a whole with Ctrl-C.

Starts the local stack (unless something already answers on its ports), then the producer, the speed
layer, the Dagster webserver and daemon (``dagster dev``: schedule, sensor, UI) and the dashboard, each as
its own process in its own session with its log under ``.stack/demo/``. It waits until the web UIs
answer, prints where everything is, and then watches: a process that dies takes the demo down loudly
(with the end of its log), and Ctrl-C (or SIGTERM) stops everything it started, the producer first,
each with SIGTERM so the producer flushes and the speed layer finishes its batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.settings import Settings
from infra.stack import LocalStack, tail
from orchestration.runs import fail_abandoned_runs

POLL_INTERVAL_S = 0.5
READY_TIMEOUT_S = 180.0


class DemoError(RuntimeError):
    """A demo process failed to start or died; the message names it and ends with its log."""


@dataclass
class DemoProcess:
    """One long-running part of the pipeline."""

    name: str
    command: list[str]
    log_path: Path
    url: str | None = None
    """Where a person looks at it (and where readiness is probed), for the web UIs."""
    extra_env: dict[str, str] = field(default_factory=dict)
    niceness: int = 0
    """Added to its CPU niceness (inherited by its children): background work yields to the rest."""
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.extra_env},
            start_new_session=True,  # its own process group: a stop reaches its children too
            preexec_fn=child_setup(os.getpid(), self.niceness),
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        """Whether its web UI answers (processes without one count as ready once running)."""
        if self.url is None:
            return self.running
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return response.status < 500
        except OSError:
            return False

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM to the process, SIGKILL to its group after ``timeout_s``; returns its exit code.

        Only the process itself gets the SIGTERM: it stops its own children in order (the speed layer
        still needs its Spark JVM to finish the current batch). What is left of the group afterwards
        is killed.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _signal_group(self.process.pid, signal.SIGKILL)  # leftovers of the group (e.g. dagster's children)
        if self._log is not None:
            self._log.close()
        return self.process.returncode

    def failure(self) -> DemoError:
        code = self.process.returncode if self.process else None
        return DemoError(f"{self.name} exited (code {code}); end of {self.log_path}:\n{tail(self.log_path)}")


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def child_setup(demo_pid: int, niceness: int) -> Callable[[], None]:
    """What a demo process runs before its command: its niceness, and on Linux a SIGTERM when the demo
    dies, however it dies. Each process has its own session (so that a stop reaches its children), so
    a demo killed with SIGKILL would otherwise leave the pipeline running behind it."""

    def setup() -> None:
        if niceness:
            os.nice(niceness)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != demo_pid:  # the demo died before the line above
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def demo_environment(settings: Settings) -> dict[str, str]:
    """What the demo changes in its processes' settings (every other setting comes from the user's).

    The demo is a local trial on synthetic or public data: its processes accept the default secrets
    (with a warning) unless the user set their own. The archive starts on new offsets whenever the
    batch layer is free, not on a schedule, so the batch view appears and moves within minutes; the
    dashboard reads the same settings, to say when. The speed layer triggers less often, leaving the
    cores to those runs.
    """
    return {
        "USERPULSE_SECRETS__DEVELOPMENT_MODE": "true",
        "USERPULSE_BATCH_LAYER__ARCHIVE_TRIGGER": "new_offsets",
        "USERPULSE_BATCH_LAYER__NEW_OFFSETS_CHECK_S": str(settings.demo.new_offsets_check_s),
        "USERPULSE_SPEED_LAYER__TRIGGER_INTERVAL": settings.demo.speed_trigger_interval,
    }


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, signum)


def demo_processes(settings: Settings) -> list[DemoProcess]:
    """The pipeline's processes, in start order, each configured by the same settings (environment)."""
    cli = [sys.executable, "-m", "userpulse.cli"]
    logs = settings.paths.stack_dir / "demo"
    demo, serving = settings.demo, settings.serving
    settings.paths.dagster_home.mkdir(parents=True, exist_ok=True)
    environment = demo_environment(settings)
    return [
        DemoProcess(
            "producer",
            [*cli, "produce", "--source", demo.producer_source, "--rate", demo.producer_rate],
            logs / "producer.log",
            extra_env=environment,
        ),
        DemoProcess("speed layer", [*cli, "speed"], logs / "speed.log", extra_env=environment),
        DemoProcess(
            "dagster",
            [
                *(sys.executable, "-m", "dagster", "dev", "-m", "orchestration.definitions"),
                *("-h", demo.dagster_host, "-p", str(demo.dagster_port)),
            ],
            logs / "dagster.log",
            url=f"http://{demo.dagster_host}:{demo.dagster_port}/server_info",
            extra_env={
                **environment,
                "DAGSTER_HOME": str(settings.paths.dagster_home),
                "USERPULSE_SPARK__CONF": json.dumps({**demo.batch_spark_conf, **settings.spark.conf}),
            },
            niceness=demo.batch_niceness,
        ),
        DemoProcess(
            "dashboard",
            [*cli, "dashboard"],
            logs / "dashboard.log",
            url=f"http://{serving.host}:{serving.port}/",
            extra_env=environment,
        ),
    ]


class Demo:
    """Starts the pipeline, watches it, and stops what it started."""

    def __init__(self, settings: Settings, say: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.say = say
        self.stack = LocalStack(settings)
        self.started_stack = False
        self.processes = demo_processes(settings)
        self.stop_requested = False

    def start(self) -> None:
        """Start the stack (if needed) and every process; return once all of them are ready."""
        if self.stack.all_answering():
            self.say("stack: already running, used as is (and left running)")
        else:
            self.say("stack: starting Kafka, Cassandra and FerretDB…")
            self.stack.up()
            self.started_stack = True
        abandoned = fail_abandoned_runs(self.settings.paths.dagster_home)
        if abandoned:
            self.say(f"dagster: {len(abandoned)} run(s) a stopped Dagster left in flight marked failed")
        for process in self.processes:
            self.say(f"{process.name}: starting (log {process.log_path})")
            process.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(self.processes)
        while waiting:
            for process in list(waiting):
                if not process.running:
                    raise process.failure()
                if process.answers():
                    waiting.remove(process)
            if self.stop_requested:
                return
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise DemoError(f"not ready within {READY_TIMEOUT_S:.0f} s: {names}")
            time.sleep(POLL_INTERVAL_S)

    def urls(self) -> dict[str, str]:
        demo = self.settings.demo
        return {
            "dashboard": f"http://{self.settings.serving.host}:{self.settings.serving.port}/",
            "dagster": f"http://{demo.dagster_host}:{demo.dagster_port}/",
        }

    def what_appears_when(self) -> list[tuple[str, str]]:
        """What the user will see on the dashboard, and when (for the banner)."""
        refresh_s = self.settings.serving.refresh_period_s
        check_s = self.settings.demo.new_offsets_check_s
        return [
            ("speed layer figures", f"now, then every {refresh_s:g} s (the speed layer's partials)"),
            (
                "first batch view",
                f"an archive run starts within {check_s} s of Dagster being up, then a refresh of the "
                "views (each run starts its own Spark: a few minutes in all on 2 cores); the freshness "
                "panel then shows the batch cutoff and each layer's share",
            ),
            (
                "the merge moving",
                "the next archive starts as soon as that refresh is done, and so on: the cutoff moves "
                "forward and the batch share grows",
            ),
        ]

    def watch(self) -> None:
        """Block until a stop is requested; a process that exits meanwhile is an error."""
        while not self.stop_requested:
            for process in self.processes:
                if not process.running:
                    raise process.failure()
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Stop every process in start order (the source first, so the layers can finish what they
        have), then the stack if the demo started it."""
        for process in self.processes:
            if process.process is None:
                continue
            code = process.stop(self.settings.demo.stop_timeout_s)
            self.say(f"{process.name}: stopped (exit code {code})")
        if self.started_stack:
            self.say("stack: stopping…")
            self.stack.down()
            self.say("stack: stopped")

    def request_stop(self, signum: int, _frame: object) -> None:
        self.say(f"{signal.Signals(signum).name}: stopping the demo…")
        self.stop_requested = True
