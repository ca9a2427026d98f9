"""The embed flow submitted as a Ray job to a local head started by the test.

The head runs in a new process group and the test ends exactly that group (never
`ray stop`, which would end every Ray process on the machine, other users' too).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from emdlot.text.fixtures import build_tiny_bert, make_corpus, write_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def stop_group(proc: subprocess.Popen, grace_s: float = 3) -> None:
    """End the process group this test started: SIGTERM (the head drains), then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group: raylet, gcs, workers
    except ProcessLookupError:
        pass
    proc.wait()


def env_with_venv() -> dict:
    """This venv first on PATH (the job's `python`); the CLI sends the head's auth token."""
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # set by mlflow in earlier tests
    return {**inherited, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
            "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    prospectus, manifest = make_corpus(64, seed=2)
    write_dataset(root / "data", prospectus, manifest)
    return root


@pytest.fixture(scope="module")
def ray_head():
    gcs, dashboard, client, node, obj, agent_http, agent_grpc, metrics, runtime_env = free_ports(9)
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
           f"--ray-client-server-port={client}", f"--node-manager-port={node}", f"--object-manager-port={obj}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={temp}",
           "--node-ip-address=127.0.0.1"]
    head = subprocess.Popen(cmd, env=env_with_venv(), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = f"http://127.0.0.1:{dashboard}"
    import urllib.error
    import urllib.request

    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2).close()
            break
        except urllib.error.HTTPError:  # it answers (401 without the token): it is up
            break
        except OSError:
            pass
        if head.poll() is not None or time.time() > deadline:
            stop_group(head)
            pytest.fail(f"ray head did not come up: {head.stdout.read() if head.poll() is not None else 'timeout'}")
        time.sleep(0.5)
    yield address
    stop_group(head)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.long
def test_ray_job_submit_runs_the_flow_on_a_local_head(ray_head, dataset):
    bert = build_tiny_bert(dataset / "bert")
    out = dataset / "out_job"
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={ray_head}", "--working-dir", str(ROOT), "--",
           "python", "flows/embed.py", "--data", str(dataset / "data"), "--out", str(out),
           "--embedder", str(bert), "--tracking-uri", f"sqlite:///{dataset / 'mlflow.db'}"]
    done = subprocess.run(cmd, env=env_with_venv(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    features = pd.read_parquet(out / "text_features.parquet")
    assert len(features) == 64 and features.shape[1] == 81
    summary = json.loads((out / "embed_summary.json").read_text())
    assert summary["embedder"] == "bert" and summary["embed_computed"] == 128


def test_ray_job_submit_runs_the_tune_flow_and_records_land_outside_the_job_copy(ray_head, dataset):
    from emdlot.config import PrepareConfig, SynthConfig
    from emdlot.data.prepare import prepare
    from emdlot.synth import generate, write_dataset as write_inputs

    write_inputs(generate(SynthConfig(firms=1000, seed=3)), dataset / "tune_in")
    prepare(dataset / "tune_in", dataset / "tune_ds", PrepareConfig(seed=86))
    (dataset / "tiny.yaml").write_text("model: {hidden_size: 8, feature_embed_size: 4, num_clusters: 2}\n"
                                       "train: {batch_size: 64, max_epochs: 1, warmup_epochs: 1, identifier_epochs: 1, kmeans_n_init: 1}\n")
    (dataset / "space.yaml").write_text("hidden_size: {choice: [4, 8]}\n")
    home = dataset / "emdlot_home"
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={ray_head}", "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"env_vars": {"EMDLOT_HOME": str(home)}}), "--",
           "python", "flows/tune.py", "--data", str(dataset / "tune_ds"), "--trials", "1", "--config", str(dataset / "tiny.yaml"),
           "--space", str(dataset / "space.yaml")]
    done = subprocess.run(cmd, env=env_with_venv(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the default locations are absolute and outside the job's working-directory copy
    assert (home / "tune" / "table5" / "best_config.yaml").exists() and (home / "mlflow.db").exists()
    assert f"outputs in {home / 'tune' / 'table5'}" in done.stdout


@pytest.mark.long  # about 100 s alone, 200 s beside another worker: the tune job above covers `ray job submit`, and
# tests/test_train_flow.py the train flow with Ray Train and fold models; this one adds the two together
def test_ray_job_submit_runs_the_train_flow_with_ray_train_on_the_head(ray_head, dataset):
    from emdlot.config import SynthConfig
    from emdlot.synth import generate, write_dataset as write_inputs

    write_inputs(generate(SynthConfig(firms=240, seed=5, distressed_rate=0.25)), dataset / "train_in")
    # The run predicts with its two fold models (train.predict_with "folds"), which come back from the Train worker.
    (dataset / "train_tiny.yaml").write_text("model: {hidden_size: 8, feature_embed_size: 4, num_clusters: 2, prior_shift: true}\n"
                                             "train: {batch_size: 64, max_epochs: 2, warmup_epochs: 1, identifier_epochs: 1, kmeans_n_init: 1, "
                                             "refit_on_val: true, epoch_folds: 2, predict_with: folds}\n")
    out = dataset / "train_out"
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={ray_head}", "--working-dir", str(ROOT), "--",
           "python", "flows/train.py", "--input", str(dataset / "train_in"), "--config", str(dataset / "train_tiny.yaml"),
           "--seeds", "1", "--max-seeds", "1", "--baselines", "Logistic Regression", "--no-ablations", "--no-register",
           "--n-boot", "20", "--out", str(out), "--tracking-uri", f"sqlite:///{dataset / 'train_mlflow.db'}"]
    done = subprocess.run(cmd, env=env_with_venv(), cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert set(runs["model"]) >= {"EMDLOT", "Logistic Regression", "shortcut: sequence length"}
    assert (out / "ray_train").is_dir()  # the EMDLOT run went through Ray Train's storage on the head
    package = out / "package"  # the fold models, no refit: the lead's weights and one more member
    assert (package / "model.safetensors").exists() and [p.name for p in package.glob("member-*")] == ["member-1.safetensors"]
    assert "fold models" in done.stdout
