"""What the card-number scan and the phone masking cost on ordinary and hostile text: `python benchmarks/scanning.py`.

Both run on every submission (the scan on every value before anything is kept; the masking on every log line),
so a hostile body must not make them expensive. Prints the median of a few runs per input; bounded to a few
seconds in all.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from formrelay.core.logs import mask_phones  # noqa: E402
from formrelay.forms.cards import contains_card_number  # noqa: E402

KB = 1024


def inputs() -> dict[str, str]:
    rng = random.Random(20)
    return {
        "1 KB form comment": ("Please keep me updated, call 0812 3456 7890 after 6pm. " * 20)[:KB],
        "64 KB prose": ("Please keep me updated about the clean air campaign. " * 1300)[:64 * KB],
        "64 KB random digits and spaces": "".join(rng.choice("0123456789 ") for _ in range(64 * KB)),
        "64 KB '1. 1. 1. ...'": ("1. " * 22000)[:64 * KB],
        "64 KB '4 4 4 ...'": ("4 " * 33000)[:64 * KB],
        "64 KB one long number": "7" * 64 * KB,
    }


def median_ms(function: object, text: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function(text)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    print(f"{'input':34} {'card scan':>12} {'phone masking':>15}")
    for name, text in inputs().items():
        print(f"{name:34} {median_ms(contains_card_number, text):9.2f} ms {median_ms(mask_phones, text):12.2f} ms")


if __name__ == "__main__":
    main()
