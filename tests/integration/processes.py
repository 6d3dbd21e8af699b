"""Driving ``userpulse`` subprocesses in integration tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def sigterm_once(process: subprocess.Popen[str], ready: Callable[[], bool], timeout_s: float = 240) -> str:
    """Wait until ``ready()`` (the process must stay alive meanwhile), send SIGTERM, wait for the exit.

    Returns the process's stderr. The process is killed if it is still running when this returns.
    """
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert process.poll() is None, "the process exited before it was stopped"
            assert time.monotonic() < deadline, f"not ready within {timeout_s:.0f} s"
            time.sleep(0.3)
        process.terminate()
        _, stderr = process.communicate(timeout=120)
        return stderr
    finally:
        if process.poll() is None:
            process.kill()
