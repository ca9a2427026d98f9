"""Where a flow's Ray work runs: the cluster named by --ray-address or RAY_ADDRESS, else a new local Ray.

`address="local"` never attaches to a stale cluster by accident (a `ray_current_cluster` file left by an
earlier `ray start` would otherwise be picked up).
"""
from __future__ import annotations

import os

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, ignore_reinit_error=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True)
