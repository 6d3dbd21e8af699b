"""What the benchmarks share: the local stack started for a run (and stopped after, if they started
it), their throwaway stores removed, and one call timed many times (p50 and p95 in milliseconds).

Imported by the scripts of this folder (run as ``python bench/<name>.py``, which puts it on the path).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from core.settings import Settings
from infra.stack import LocalStack


@contextmanager
def local_stack(settings: Settings) -> Iterator[None]:
    """The local stack for the block: started if it is not running, and then stopped after."""
    stack = LocalStack(settings)
    started = not stack.all_answering()
    if started:
        stack.up()
    try:
        yield
    finally:
        if started:
            stack.down()


def timed(label: str, call: Callable[[], object], repeat: int) -> dict[str, Any]:
    """Run ``call`` once to warm up (connections, prepared statements), then ``repeat`` times; print and
    return its p50 and p95."""
    call()
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1000)
    durations.sort()
    figures = {
        "query": label,
        "p50_ms": round(statistics.median(durations), 1),
        "p95_ms": round(durations[min(len(durations) - 1, int(len(durations) * 0.95))], 1),
    }
    print(f"{label:<50} p50 {figures['p50_ms']:>8.1f} ms   p95 {figures['p95_ms']:>8.1f} ms")
    return figures
