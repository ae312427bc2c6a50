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
        ray.init(address=address, log_to_driver=True, runtime_env=_WORKER_LOGS)
    else:
        log.info("starting a local Ray on 127.0.0.1")
        ray.init(
            address="local",  # a new local cluster, never someone else's
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=True,
            runtime_env=_WORKER_LOGS,
        )
    _quiet_data_context()
    return True


# every worker process logs mmx's INFO lines (stage progress, epochs) to the driver's output
_WORKER_LOGS = {"worker_process_setup_hook": "mmx.logs.setup_worker"}


def _quiet_data_context() -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False


def check_storage(*uris: str) -> None:
    """Fail fast, with a clear message, when Ray's workers cannot reach a remote ``uri`` the
    driver uses (s3:// archive or output): a worker lacking the AWS settings (credentials,
    ``AWS_ENDPOINT_URL``…) would otherwise fail deep inside a stage, or mark every trailer
    failed. Probes one worker; local paths are not probed. Never reports credentials."""
    remote = sorted({u for u in uris if u and "://" in u and not u.startswith("file://")})
    if not remote:
        return
    errors = ray.get(_probe_storage.remote(remote))
    if errors:
        detail = "; ".join(f"{u}: {e}" for u, e in errors.items())
        raise RuntimeError(
            f"Ray workers cannot reach {', '.join(errors)} ({detail}). Every Ray process needs "
            "the storage settings of the AWS chain (a role, the node's env, or non-secret "
            "settings such as AWS_ENDPOINT_URL via the job's runtime_env env_vars)."
        )


@ray.remote(num_cpus=0, max_retries=0)
def _probe_storage(uris: list[str]) -> dict[str, str]:
    from mmx import storage

    errors = {}
    for uri in uris:
        try:
            storage.exists(uri)
        except Exception as err:  # noqa: BLE001 - reported to the driver
            errors[uri] = f"{type(err).__name__}: {err}"[:300]
    return errors
