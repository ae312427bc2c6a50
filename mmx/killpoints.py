"""Named points where a test can SIGKILL the whole job (testing only).

``MMX_DEBUG_KILL_AT=<point>[,<point>…]`` in the job's environment (a local Ray's workers
inherit it) makes :func:`reached` kill every process of the job's session — the driver, the
local Ray it started and its workers — with SIGKILL the first time one of those points is
reached, exactly as a node loss or an operator's ``kill -9`` would. The job must run as the
leader of its own session (``start_new_session=True``, as the tests start it); anywhere else
only the calling process is killed. Points: ``publish:<file>`` before each snapshot file,
``publish:complete`` (``_COMPLETE`` written, LATEST not moved yet), ``publish:latest``
(LATEST moved, the run not yet finished), ``checkpoint`` (weights written, ``meta.json``
not yet), ``shard`` (a FAISS shard's index written, its id map not yet).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "MMX_DEBUG_KILL_AT"


def reached(point: str) -> None:
    """Kill the job here if ``MMX_DEBUG_KILL_AT`` names ``point``; otherwise do nothing."""
    wanted = os.environ.get(ENV, "")
    if not wanted or point not in wanted.split(","):
        return
    sid = os.getsid(0)
    try:
        leader = Path(f"/proc/{sid}/cmdline").read_bytes()
    except OSError:
        leader = b""
    log.error("%s names %r: killing the job (session %d) with SIGKILL", ENV, point, sid)
    if b"index_archive" in leader or b"mmx" in leader:  # the job leads its session
        me = os.getpid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    os.kill(os.getpid(), signal.SIGKILL)
