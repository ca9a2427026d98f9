"""benchmarks/quality.py --merge: a round run in parts pools to what one run over all its splits would give, and a
paired difference is taken split by split (each model's seeds on a split averaged first)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("benchmarks_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)

METRICS = ("recall", "f1", "average_precision", "auc")


def _runs(model_seed: int, splits, seeds) -> list[dict]:
    rng = np.random.default_rng(model_seed)
    return [{"split": s, "seed": seed, **{m: float(rng.uniform(0.3, 0.9)) for m in METRICS}, "n_predicted_classes": 3}
            for s in splits for seed in seeds]


def _write(path: Path, splits, runs: dict[str, list[dict]]) -> str:
    results = {model: {"runs": [r for r in rs if r["split"] in splits]} for model, rs in runs.items()}
    path.write_text(json.dumps({"setup": {"splits": list(splits)}, "results": {"matched": results}}))
    return str(path)


def test_a_round_run_in_two_parts_merges_to_the_whole_and_pairs_by_split(tmp_path):
    runs = {"EMDLOT": _runs(1, [1, 2, 3, 4], [86, 127]), "XGBoost": _runs(2, [1, 2, 3, 4], [1])}
    whole = quality.merge_results([_write(tmp_path / "all.json", [1, 2, 3, 4], runs)])
    parts = quality.merge_results([_write(tmp_path / "a.json", [1, 2], runs), _write(tmp_path / "b.json", [3, 4], runs)])
    for model in runs:
        for m in METRICS:
            assert parts["matched"][model][m] == pytest.approx(whole["matched"][model][m])
        assert parts["matched"][model]["valid_runs"] == {"count": len(runs[model]), "of": len(runs[model])}
    with pytest.raises(ValueError, match=r"splits \[1, 2\] in an earlier file"):
        quality.merge_results([tmp_path / "a.json", tmp_path / "all.json"])

    pair = quality.paired(parts["matched"], "EMDLOT", "XGBoost")
    for m in METRICS:
        diffs = [np.mean([r[m] for r in runs["EMDLOT"] if r["split"] == s]) - next(r[m] for r in runs["XGBoost"] if r["split"] == s)
                 for s in [1, 2, 3, 4]]
        assert pair[m]["diff"] == pytest.approx(np.mean(diffs))
        assert (pair[m]["above"], pair[m]["below"]) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
        assert pair[m]["ci_low"] <= pair[m]["diff"] <= pair[m]["ci_high"]
    assert pair["splits"] == [1, 2, 3, 4]
