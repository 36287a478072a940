"""eventloop.run: the one way podq's processes run, with the collector tuned first."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from serverless import eventloop
assert gc.get_threshold()[0] == 700 and gc.get_freeze_count() == 0
async def main():
    return gc.get_threshold()[0], gc.get_freeze_count()
young, frozen = eventloop.run(main())
print(young, frozen)
"""


def test_run_freezes_what_exists_and_collects_the_young_generation_less_often() -> None:
    # a fresh interpreter: the test process's own collector settings stay as they are
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    young, frozen = map(int, out.stdout.split())
    from serverless.eventloop import GC_YOUNG

    assert young == GC_YOUNG
    assert frozen > 1000  # the modules, classes and functions imported so far
