"""One Ray session per job: connect to a cluster or start a local one on 127.0.0.1."""

from __future__ import annotations

import logging
import os

import ray

from mmx.config import RunConfig

log = logging.getLogger(__name__)


def connect(cfg: RunConfig) -> bool:
    """Connect to Ray; return True when this call started it (the caller shuts it down).

    ``resources.address`` or ``RAY_ADDRESS`` (as set by ``ray job submit``) joins an existing
    cluster; otherwise a local Ray is started, bound to 127.0.0.1, without the dashboard.
    """
    if ray.is_initialized():
        return False
    address = cfg.resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        log.info("starting a local Ray on 127.0.0.1")
        ray.init(
            address="local",  # a new local cluster, never someone else's
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=True,
        )
    _quiet_data_context()
    return True


def _quiet_data_context() -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
