"""The HTML report: self-contained, every figure loads in headless Chromium, a page per flagged issuer.

The browser test skips only when Chromium is missing and EMDLOT_REQUIRE_BROWSER is unset (CI sets it, so CI
cannot skip silently). It reads what the page says about itself after load (data-figures-loaded/-total, set by
the report's own script once every image has decoded) and checks a screenshot is not blank."""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from emdlot.cli import main
from emdlot.evaluation.report import flag_issuers, markdown_table_html, write_report
from emdlot.evaluation.tables import write_results
from emdlot.schema import CLASSES
from test_explain import FINANCIAL, MACRO, fake_run
from test_tables import synthetic

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
MAX_FLAGGED = 4


@pytest.fixture(scope="module")
def train_out(tmp_path_factory):
    """A folder shaped like flows/train.py's output: tables, interpretations of two splits, the split's
    meta.json (feature groups) and the embed flow's extractions."""
    out = tmp_path_factory.mktemp("train_out")
    predictions = synthetic({"EMDLOT": ("emdlot", 2.0), "ABL1": ("ablation", 1.5), "XGBoost": ("baseline", 1.0),
                             "shortcut: sequence length": ("shortcut", 0.0)}, seeds=2)
    write_results(predictions, out / "tables", n=2, n_boot=20)
    runs = [fake_run(seed=0, split=1), fake_run(seed=1, split=1), fake_run(seed=2, split=2, firm_prefix="G")]
    (out / "interpretations").mkdir()
    for run in runs:
        run.save(out / "interpretations" / f"EMDLOT-split{run.split}-seed{run.seed}.npz")
    (out / "splits" / "seed-1").mkdir(parents=True)
    (out / "splits" / "seed-1" / "meta.json").write_text(json.dumps({"financial_features": FINANCIAL, "macro_features": MACRO}))
    (out / "text" / "seed-1").mkdir(parents=True)
    firms = [f"F{i:04d}" for i in range(60)] + [f"G{i:04d}" for i in range(60)]
    pd.DataFrame({"firm_id": firms, "section": "risk_factors", "text": [f"{f}：短期偿债压力较大。" for f in firms]}).to_parquet(
        out / "text" / "seed-1" / "extractions.parquet")
    return out, runs


@pytest.fixture(scope="module")
def report(train_out):
    out, _ = train_out
    return write_report(out, max_flagged=MAX_FLAGGED)


def test_report_is_one_self_contained_file_with_every_section(report, train_out):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)  # nothing to fetch
    sources = re.findall(r"<img src='([^']*)'", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert f'data-figures-expected="{len(sources)}"' in page
    for anchor in ("metrics", "attention", "clusters", "issuers"):
        assert f"id='{anchor}'" in page
    assert "Table 6: test metrics" in page and "±" in page  # metric tables with intervals
    assert "Figure 7" in page and "Figure 8" in page and "Figure 9" in page and "Table D.1" in page
    assert page.count("<article class='issuer'") == MAX_FLAGGED
    assert "短期偿债压力较大" in page  # the flagged issuers' prospectus key sentences


def test_flagged_issuers_are_predicted_distressed_most_likely_first(train_out):
    _, runs = train_out
    flagged = flag_issuers(runs, limit=50)
    assert len(flagged) > 0 and (flagged["predicted"] != "Performing").all()
    distress = 1 - flagged["p_Performing"]
    assert distress.is_monotonic_decreasing
    # A firm in two runs of a split is judged on its average probability over both.
    firm = flagged.loc[flagged["runs"] == 2, "firm_id"].iloc[0]
    i = list(runs[0].firm_id).index(firm)
    mean = (runs[0].interpretation.probabilities[i] + runs[1].interpretation.probabilities[i]) / 2
    row = flagged.set_index("firm_id").loc[firm]
    np.testing.assert_allclose(row[[f"p_{c}" for c in CLASSES]].to_numpy(dtype=float), mean)
    everyone = pd.concat([pd.DataFrame(r.interpretation.probabilities, columns=CLASSES) for r in runs])
    assert len(flag_issuers(runs, limit=3)) == 3 and len(flagged) <= len(everyone)


def test_markdown_tables_become_html_tables_with_notes():
    md = "## Table X: a \\| b\n\n| model | AUC |\n| --- | --- |\n| EMDLOT | 0.9 ± 0.1 [0.8, 1.0] |\n\n- a note <b>\n"
    out = markdown_table_html(md)
    assert "<h3>Table X: a \\| b</h3>" in out or "<h3>Table X: a | b</h3>" in out
    assert "<th>model</th><th>AUC</th>" in out and "<td>0.9 ± 0.1 [0.8, 1.0]</td>" in out and "---" not in out
    assert "<li>a note &lt;b&gt;</li>" in out


def test_cli_report_writes_the_file(train_out, tmp_path, capsys):
    out, _ = train_out
    target = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(target), "--max-flagged", "1"]) == 0
    assert "wrote" in capsys.readouterr().out and target.read_text(encoding="utf-8").count("<article class='issuer'") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2


def _chromium(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Headless Chromium as root in a container: no sandbox, no GPU, its own profile; virtual time lets the
    page finish loading (and its load script run) before the DOM is dumped or the screenshot taken."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                           "--hide-scrollbars", "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=timeout)


def _figures_loaded(html_path, profile) -> tuple[int, int]:
    dom = _chromium(f"--user-data-dir={profile}", "--dump-dom", html_path.as_uri()).stdout
    loaded = re.search(r'data-figures-loaded="(\d+)"', dom)
    total = re.search(r'data-figures-total="(\d+)"', dom)
    assert loaded and total, f"the report's load script did not run; Chromium printed: {dom[:300]!r}"
    return int(loaded.group(1)), int(total.group(1))


def test_report_renders_in_headless_chromium_with_every_figure(report, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("EMDLOT_REQUIRE_BROWSER"):
            pytest.fail("EMDLOT_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("chromium not installed (set EMDLOT_REQUIRE_BROWSER=1 to make this a failure)")
    page = report.read_text(encoding="utf-8")
    expected = page.count("<img ")
    assert _figures_loaded(report, tmp_path / "profile") == (expected, expected)

    # The check can fail: one figure's data broken, and the page reports one fewer loaded.
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1), encoding="utf-8")
    assert _figures_loaded(broken, tmp_path / "profile") == (expected - 1, expected)

    shot = tmp_path / "shot.png"
    _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri())
    from matplotlib.image import imread

    pixels = imread(shot)[:, :, :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert ink > 0.03 and pixels.std() > 0.05, f"screenshot looks blank: {ink:.3f} of pixels inked"


def test_evaluation_layer_imports_neither_mlflow_nor_ray():
    """Dependencies point one way (DESIGN.md section 7): the report and figures must load without the tracking stack."""
    import sys

    code = ("import sys, emdlot.evaluation.report, emdlot.evaluation.explain_figures, emdlot.explain_cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'ray')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_explanations_built_from_the_same_runs_are_reused_and_others_are_rebuilt(tmp_path):
    from emdlot.evaluation.explain_figures import build_explanations, saved_explanations

    runs = [fake_run(seed=0, split=1), fake_run(seed=1, split=1)]
    assert saved_explanations(runs, tmp_path) is None
    built = build_explanations(runs, tmp_path, FINANCIAL, MACRO)
    assert saved_explanations(runs, tmp_path) == built  # every file, named as the build named it
    assert saved_explanations(runs[:1], tmp_path) is None  # other runs: not theirs
    built["figure8_png"].unlink()
    assert saved_explanations(runs, tmp_path) is None  # a file gone: build again
