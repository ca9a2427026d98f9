"""Where a flow's Ray work runs: the cluster named by --ray-address or RAY_ADDRESS, else a new local Ray.

`address="local"` never attaches to a stale cluster by accident (a `ray_current_cluster` file left by an
earlier `ray start` would otherwise be picked up). `ray.init` installs its own SIGTERM handler (exit 1); the
handler in place before it is put back, so a flow's MLflow run still ends KILLED on `ray job stop` or `kill`
(emdlot.tracking.mlflow_run) instead of FAILED with "SystemExit: 1".
"""
from __future__ import annotations

import os
import signal
import threading

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start or join Ray (address "local", or none and no RAY_ADDRESS: a new local Ray), keeping the SIGTERM
    handler that was in place."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=log_to_driver)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=log_to_driver)
    if main and previous is not None:
        signal.signal(signal.SIGTERM, previous)
