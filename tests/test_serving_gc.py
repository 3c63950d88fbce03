"""The service freezes what start-up made, so the cyclic GC's full collections (each a pause of
the event loop) stop walking the imported modules and models: a Redis replica, which loads no
state of its own to freeze, had 60-220 ms tails at 500 req/s from them (`bench/balancer.py`)."""

from __future__ import annotations

import subprocess
import sys

START_AND_MEASURE = """
import gc, sys
from dataclasses import replace
from fraudloop.core.store import LocalObjectStore
from fraudloop.serving.app import ScoringService
from fraudloop.serving.config import ServeConfig

config = replace(ServeConfig(), spool_dir=sys.argv[2], log_predictions=False)
service = ScoringService(LocalObjectStore(sys.argv[1]), config)  # an empty store: not ready
before = gc.get_freeze_count()
service.start()
try:
    print(before, gc.get_freeze_count())
finally:
    service.stop()
"""


def test_start_up_objects_are_frozen_out_of_the_full_collections(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", START_AND_MEASURE, str(tmp_path / "store"), str(tmp_path / "sp")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before == 0
    assert after > 50_000  # the imports alone are ~160,000 objects
