"""Throughput of the synthetic source: profiles per second of ``next_batch(5000)`` on one core.

Run with ``.venv/bin/python bench/bench_synthetic.py [--seconds 3] [--batch 5000]``. The Faker pools are
built (and timed) before the measured loop, since a producer builds them once per process.
"""

from __future__ import annotations

import argparse
import time

from core.schema import NATIONALITIES
from ingestion.synthetic import SyntheticSource


def measure(seconds: float, batch: int) -> tuple[int, float]:
    """Profiles generated and seconds spent in back-to-back ``next_batch(batch)`` calls for ``seconds``."""
    source = SyntheticSource(seed=0)
    generated = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        generated += len(source.next_batch(batch))
    return generated, elapsed


def main() -> None:
    """Print the warm-up time and the measured throughput."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to measure (default 3)")
    parser.add_argument("--batch", type=int, default=5000, help="profiles per next_batch call (default 5000)")
    args = parser.parse_args()

    start = time.perf_counter()
    for nat in NATIONALITIES:  # build every nationality's pools outside the measured loop
        SyntheticSource().next_batch(1, (nat,))
    print(f"pools built in {time.perf_counter() - start:.2f} s")

    generated, elapsed = measure(args.seconds, args.batch)
    rate = generated / elapsed
    print(f"{generated:,} profiles in {elapsed:.2f} s: {rate:,.0f} profiles/s (next_batch({args.batch}))")


if __name__ == "__main__":
    main()
