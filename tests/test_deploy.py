"""cluster.yaml and Dockerfile: what Ray's launcher would refuse, or what would expose a port."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid_for_rays_launcher():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # dashboard and job server not on a public interface


def test_every_node_starts_ray_with_token_auth_and_the_token_the_file_mounts_copy():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    mounted = {dest for dest, src in config["file_mounts"].items() if src.endswith(".ray/auth_token")}
    assert len(mounted) == 1
    token_path = mounted.pop().replace("~", "$HOME", 1)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        for command in starts:
            assert "RAY_AUTH_MODE=token" in command and f"RAY_AUTH_TOKEN_PATH={token_path}" in command, (key, command)


def test_dockerfile_installs_extras_that_exist_and_runs_unprivileged():
    dockerfile = (ROOT / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (default_extra,) = re.findall(r"^ARG EXTRAS=(\S*)$", dockerfile, flags=re.M)
    assert default_extra in extras
    for copied in re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.M)
    assert users and users[-1] != "root"
