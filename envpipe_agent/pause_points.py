"""A test hook: stop at a named point of a stage, so a fault test can kill envpipe there.

``ENVPIPE_PAUSE_AT=promote:copied`` makes a promote print ``envpipe: paused at
promote:copied`` on stderr once its files are copied, and wait there (for
``ENVPIPE_PAUSE_SECONDS``, default 600) for the test's ``kill -9``. Unset, each point
costs one dictionary lookup. The points are the moments a kill does most harm: between
the writes that must all happen for the repository to be consistent.
"""
from __future__ import annotations

import sys
import time
from typing import Mapping

PAUSE_VARIABLE = "ENVPIPE_PAUSE_AT"
POINTS = (
    "publish:claimed",      # the version is claimed, nothing uploaded
    "publish:uploaded",     # every file uploaded, the manifest not yet written
    "promote:copying",      # the folder is marked as being promoted, nothing copied yet
    "promote:copied",       # files copied and stale ones deleted, the manifest not yet written
    "apply:fetched",        # the lock held, the definition fetched, the tool not yet run
    "apply:done",           # the tool has run, nothing recorded, the lock still held
    "bluegreen:STEP",       # a release about to run STEP (gate, deploy, test, swap, record, destroy-old)
)


def pause_point(name: str, environ: Mapping[str, str]) -> None:
    if environ.get(PAUSE_VARIABLE) != name:
        return
    sys.stderr.write(f"envpipe: paused at {name}\n")
    sys.stderr.flush()
    time.sleep(float(environ.get("ENVPIPE_PAUSE_SECONDS") or 600))
