"""The MLflow run lifecycle every flow uses: a run is opened before the work and always closed with
what happened (FINISHED, FAILED with the error, KILLED on Ctrl-C or SIGTERM); default locations."""
import os
import signal

import mlflow
import pytest

from emdlot import tracking


def _only_run(uri):
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lifecycle").experiment_id])
    return run


@pytest.mark.parametrize("raised, status", [(None, "FINISHED"), (ValueError("bad cell"), "FAILED"),
                                            (KeyboardInterrupt(), "KILLED"), ("SIGTERM", "KILLED")])
def test_a_run_ends_with_what_happened(tmp_path, raised, status):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    expected = {None: None, "SIGTERM": KeyboardInterrupt}.get(raised, type(raised))
    before = signal.getsignal(signal.SIGTERM)
    try:
        with tracking.mlflow_run("lifecycle", run_name="r", uri=uri):
            assert mlflow.active_run().info.status == "RUNNING"  # on record before any work
            if raised == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)  # what `ray job stop` and `kill` send
            elif raised is not None:
                raise raised
    except BaseException as err:  # noqa: B036 - the point is to see every kind
        assert expected is not None and isinstance(err, expected)
    run = _only_run(uri)
    assert run.info.status == status
    if raised is not None:
        assert run.data.tags["error"].startswith(("ValueError: bad cell", "KeyboardInterrupt"))
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own handling is back


def test_a_reopened_run_continues_the_same_record(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with tracking.mlflow_run("lifecycle", run_name="r", uri=uri) as first:
        mlflow.log_param("a", 1)
    with tracking.mlflow_run("lifecycle", uri=uri, run_id=first.info.run_id):
        mlflow.log_param("b", 2)
    run = _only_run(uri)
    assert run.data.params == {"a": "1", "b": "2"} and run.info.status == "FINISHED"


def test_default_store_is_absolute_and_outside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("EMDLOT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{(tmp_path / 'home' / 'mlflow.db').resolve()}"
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(tracking.TrackingError, match="cannot be reached"):
        tracking.check_tracking("http://127.0.0.1:9")


def test_a_flow_killed_after_starting_ray_still_ends_killed(tmp_path):
    """ray.init installs a SIGTERM handler that exits with 1; init_ray keeps the run's own, so `ray job stop`
    leaves the run KILLED, not FAILED with 'SystemExit: 1'."""
    import ray

    from emdlot.ray_init import init_ray

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracking.mlflow_run("lifecycle", run_name="r", uri=uri):
                init_ray(num_cpus=1)
                os.kill(os.getpid(), signal.SIGTERM)
    finally:
        ray.shutdown()
    assert _only_run(uri).info.status == "KILLED"
