"""One self-contained HTML report from a train output folder, for a credit risk officer.

Everything is inside the file: figures as base64 data URIs, styles inline, no server, no external URL,
so it opens offline and can be mailed or archived as one file. Sections, top-down:
1. metrics with intervals (OUT/tables/*.md written by emdlot.evaluation.tables), and where errors fall;
2. what the model attends to (Figures 7-9, from `explain_figures.build_explanations`);
3. the cluster phenotypes (Table D.1);
4. one section (a printed page) per flagged issuer: test firms the final runs call Extended or Defaulted,
   most likely first, with `explain.explain_firm` and the prospectus key sentences.

A small script marks the page with data-figures-loaded / data-figures-total once every image has been
decoded (and shows a warning if one was not); the tests read those in headless Chromium.
"""
from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from emdlot.evaluation import explain
from emdlot.evaluation.explain import InterpretedRun
from emdlot.evaluation.explain_figures import build_explanations, firm_figure, saved_explanations
from emdlot.evaluation.tables import format_table
from emdlot.schema import CLASSES, SECTION_LABELS, SECTIONS

MAIN_TABLES = ("table6_paper", "table6_unselected", "table6_seed_average", "paired_seed_average", "table7_paper", "table8_paper")
MORE_TABLES = ("table7_unselected", "table8_unselected", "paired_paper", "paired_unselected")
FIGURES = (("figure7_png", "Figure 7", "How much of the fused representation came from each modality, and which prospectus "
            "chapter the text modality read, for all test firms and per true class."),
           ("figure8_png", "Figure 8", "Per cluster of firms, the financial indicators the model attended to most in each of the "
            "eight quarters before the prediction point (Q-1 is the latest report used)."),
           ("figure9_png", "Figure 9", "Macro indicators: attention by quarter and their ranking. They are the same for every "
            "firm in a quarter, so they are shown for the population, not per cluster."))
STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,'Noto Sans CJK SC',sans-serif;margin:0 auto;max-width:1100px;
padding:1.5em;color:#1d2733;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #d8dee6;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}nav ol{columns:2}.muted{color:#5b6878;font-size:.9em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0 1em}th,td{border:1px solid #d8dee6;padding:.25em .5em;text-align:left}
th{background:#f1f4f8}figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #e3e7ec}
figcaption{font-size:.85em;color:#45515f}.notes{font-size:.8em;color:#45515f}
.bar{display:inline-block;height:.8em;background:#c0392b;vertical-align:middle}.bar.p0{background:#2e86c1}.bar.p1{background:#e67e22}
article.issuer{page-break-before:always;border-top:3px solid #c0392b;margin-top:2.5em;padding-top:.5em}
blockquote{margin:.3em 0 .8em;padding:.4em .8em;background:#f7f8fa;border-left:3px solid #aab4c0;font-size:.9em;white-space:pre-wrap}
.warning{background:#fdecea;border:1px solid #c0392b;padding:.5em 1em}.cols{display:flex;gap:2em;flex-wrap:wrap}
"""
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.documentElement.setAttribute('data-figures-total', String(images.length));
  document.documentElement.setAttribute('data-figures-loaded', String(loaded));
  if (loaded < images.length) { document.getElementById('figure-warning').hidden = false; }
});
"""


def load_interpretations(folder: str | Path) -> list[InterpretedRun]:
    """Every saved InterpretedRun in `folder` (OUT/interpretations), in split then seed order."""
    runs = [InterpretedRun.load(p) for p in sorted(Path(folder).glob("*.npz"))]
    return sorted(runs, key=lambda r: (r.split, r.seed))


def data_uri(path: str | Path) -> str:
    """A PNG as a data: URI, so the report needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def markdown_table_html(text: str) -> str:
    """The Markdown that emdlot.evaluation.tables writes ("## title", one pipe table, "- note" lines) as HTML."""
    out, table, notes = [], [], []
    for line in text.splitlines():
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
        elif line.startswith("- "):
            notes.append(f"<li>{html.escape(line[2:])}</li>")
    if table:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in table[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table[1:])
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if notes:
        out.append(f"<ul class='notes'>{''.join(notes)}</ul>")
    return "\n".join(out)


def flag_issuers(runs: list[InterpretedRun], limit: int = 10) -> pd.DataFrame:
    """Test firms the final runs call Extended or Defaulted (argmax of their probabilities averaged over
    the runs that scored them), most likely distressed first, at most `limit`. Columns: firm_id, p_*,
    predicted, true_class, runs, run (index of the run that explains it: the one agreeing with the average
    whose distress probability is closest to it)."""
    rows = []
    for r, run in enumerate(runs):
        for i, firm in enumerate(np.asarray(run.firm_id).astype(str)):
            rows.append({"firm_id": firm, "run": r, "y": int(run.y[i]),
                         **{f"p_{c}": float(p) for c, p in zip(CLASSES, run.interpretation.probabilities[i])}})
    columns = ["firm_id", *(f"p_{c}" for c in CLASSES), "predicted", "true_class", "runs", "run"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    proba = [f"p_{c}" for c in CLASSES]
    mean = frame.groupby("firm_id", sort=False).agg(**{p: (p, "mean") for p in proba}, y=("y", "first"), runs=("run", "size"))
    mean["predicted"] = np.asarray(CLASSES)[mean[proba].to_numpy().argmax(axis=1)]
    mean["true_class"] = [CLASSES[y] if 0 <= y < len(CLASSES) else "" for y in mean["y"]]
    flagged = mean[mean["predicted"] != CLASSES[0]].copy()
    flagged["p_distress"] = 1.0 - flagged[f"p_{CLASSES[0]}"]
    flagged = flagged.sort_values("p_distress", ascending=False, kind="stable").head(limit)
    chosen = []
    for firm, row in flagged.iterrows():
        mine = frame[frame["firm_id"] == firm]
        agree = mine[mine[proba].to_numpy().argmax(axis=1) == CLASSES.index(row["predicted"])]
        pool = agree if len(agree) else mine
        chosen.append(int(pool.iloc[np.argmin(np.abs((1.0 - pool[f"p_{CLASSES[0]}"]).to_numpy() - row["p_distress"]))]["run"]))
    flagged["run"] = chosen
    return flagged.reset_index()[columns]


def _find_groups(out: Path, dataset: str | Path | None) -> tuple[list[str] | None, list[str] | None]:
    """Feature groups from DATASET/meta.json, else the train flow's first OUT/splits/*/meta.json."""
    candidates = [Path(dataset)] if dataset else sorted((out / "splits").glob("*/meta.json"))
    for path in candidates:
        try:
            return explain.feature_groups(path)
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            continue
    return None, None


def _find_extractions(out: Path, extractions) -> pd.DataFrame | None:
    """Given extractions, else every OUT/text/*/extractions.parquet the train flow's --embed wrote."""
    if extractions is not None:
        return explain.load_extractions(extractions)
    found = sorted((out / "text").glob("*/extractions.parquet"))
    if not found:
        return None
    return pd.concat([pd.read_parquet(p) for p in found], ignore_index=True).drop_duplicates(["firm_id", "section"])


def _explanations(runs: list[InterpretedRun], folder: Path, financial, macro) -> dict[str, Path]:
    """Figures 7-9 and Table D.1: reused when the train flow already built them from these runs."""
    return saved_explanations(runs, folder) or build_explanations(runs, folder, financial, macro)


def _img(path: Path, alt: str) -> str:
    return f"<img src='{data_uri(path)}' alt='{html.escape(alt)}'>"


def _metrics_section(tables: Path) -> str:
    parts = ["<section id='metrics'><h2>1. Performance on the test firms</h2>",
             "<p class='muted'>Macro metrics over the final runs: mean ± sd over runs and a bootstrap 95% interval "
             "[low, high] that resamples splits and test firms (a test split holds only a handful of Extended and "
             "Defaulted issuers, so intervals are wide). The paper's rule keeps the first ten runs that predict all "
             "three classes; the unselected table shows the first ten seeds as drawn; the seed-average table scores each "
             "split's seeds as one ensemble (the mean of their probabilities), as the registered model does. The paired "
             "table subtracts each baseline from the seed ensemble on the same test firms: its interval, not two "
             "overlapping Table 6 intervals, says whether EMDLOT is better here.</p>"]
    found = False
    for name in MAIN_TABLES:
        if (tables / f"{name}.md").exists():
            parts.append(markdown_table_html((tables / f"{name}.md").read_text(encoding="utf-8")))
            found = True
        elif (tables / f"{name}.csv").exists():
            parts.append(f"<h3>{name}</h3>" + format_table(pd.read_csv(tables / f"{name}.csv")).to_html(index=False, escape=True))
            found = True
    more = [markdown_table_html((tables / f"{n}.md").read_text(encoding="utf-8")) for n in MORE_TABLES if (tables / f"{n}.md").exists()]
    if more:
        parts.append("<details><summary>Ranks and ablations (unselected runs), paired differences of single runs</summary>" + "\n".join(more) + "</details>")
    if not found:
        parts.append(f"<p class='warning'>No metric tables in {html.escape(str(tables))}.</p>")
    figures = [(n, t) for n, t in (("confusion.png", "Confusion matrices summed over the selected runs (rows: true class)."),
                                    ("per_class_recall.png", "Recall of each class per model: macro recall can hide a class never found."))
               if (tables / n).exists()]
    if (tables / "per_class_recall.csv").exists():
        parts.append("<h3>Recall per class</h3>" + format_table(pd.read_csv(tables / "per_class_recall.csv")).to_html(index=False))
    for name, caption in figures:
        parts.append(f"<figure>{_img(tables / name, name)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(parts) + "</section>"


def _explanation_section(paths: dict[str, Path]) -> str:
    parts = ["<section id='attention'><h2>2. What the model looks at</h2>",
             "<p class='muted'>All weights are the model's own attention from the same forward pass that made the "
             "predictions (no post-hoc method). Attention says what the model used, not what caused a default.</p>"]
    for key, title, caption in FIGURES:
        if key in paths:
            parts.append(f"<figure id='{key.split('_')[0]}'>{_img(paths[key], title)}<figcaption><b>{title}.</b> "
                         f"{html.escape(caption)}</figcaption></figure>")
        elif key == "figure9_png":
            parts.append("<p class='muted'>Figure 9 left out: no macro features named (pass the dataset's meta.json).</p>")
    return "\n".join(parts) + "</section>"


def _cluster_section(paths: dict[str, Path]) -> str:
    body = (markdown_table_html(paths["tableD1_md"].read_text(encoding="utf-8")) if "tableD1_md" in paths else
            format_table(pd.read_csv(paths["tableD1_csv"])).to_html(index=False))
    return ("<section id='clusters'><h2>3. Cluster phenotypes (Table D.1)</h2><p class='muted'>The soft clustering "
            "groups issuers the model treats alike; each test firm is counted in its most likely cluster. A cluster "
            "with many Extended or Defaulted firms, and the indicators it attends to, describe one road to distress."
            f"</p>{body}</section>")


def _bars(values: dict[str, float]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{100 * v:.1f}%</td><td><span class='bar p{i}' "
                   f"style='width:{max(1, round(200 * v))}px'></span></td></tr>" for i, (k, v) in enumerate(values.items()))
    return f"<table>{rows}</table>"


def _issuer_article(number: int, flagged: pd.Series, explanation: dict, figure: Path) -> str:
    e = explanation
    runs_line = (f"averaged over {int(flagged['runs'])} run(s): " +
                 ", ".join(f"{c} {100 * flagged[f'p_{c}']:.1f}%" for c in CLASSES))
    truth = f" True class (test label): <b>{html.escape(e['true_class'])}</b>." if e["true_class"] else ""
    features = "".join(f"<tr><td>{i}</td><td>{html.escape(f['feature'])}</td><td>{f['share_pct']:.1f}%</td>"
                       f"<td>{html.escape(f['peak_quarter'])} ({f['peak_share_pct']:.1f}%)</td></tr>"
                       for i, f in enumerate(e["top_features"], start=1))
    modality = {k: v for k, v in e["modality_weights"].items() if v > 0}
    chapters = ("" if e["chapter_weights"] is None else
                "<div><h3>Prospectus chapters</h3>" + _bars({SECTION_LABELS.get(k, k): v for k, v in e["chapter_weights"].items()}) + "</div>")
    membership = ", ".join(f"{k}: {100 * p:.0f}%" for k, p in enumerate(e["cluster_membership"]))
    sentences = "".join(f"<h3>{html.escape(SECTION_LABELS.get(s['section'], s['section']))}: key sentences</h3>"
                        f"<blockquote>{html.escape(s['text'])}</blockquote>" for s in e["key_sentences"])
    if not sentences:
        sentences = "<p class='muted'>No extracted prospectus sentences for this issuer (none found in the embed outputs).</p>"
    return f"""<article class='issuer' id='issuer-{number}'>
<h3>Issuer {number}: {html.escape(e['firm_id'])} &mdash; predicted <b>{html.escape(e['predicted_class'])}</b></h3>
<p>Run {html.escape(e['run']['model'])} split {e['run']['split']} seed {e['run']['seed']}; {runs_line}.{truth}
{e['quarters']} quarters of reports used.</p>
<div class='cols'><div><h3>Class probabilities</h3>{_bars(e['probabilities'])}</div>
<div><h3>Modalities</h3>{_bars({k.capitalize(): v for k, v in modality.items()})}</div>{chapters}</div>
<p>Cluster <b>{e['cluster']}</b> (memberships {membership}).</p>
<h3>What drove the prediction</h3>
<table><thead><tr><th>#</th><th>feature</th><th>share of numeric attention</th><th>peak quarter</th></tr></thead>
<tbody>{features}</tbody></table>
<figure>{_img(figure, e['firm_id'] + ' attention map')}<figcaption>Quarter weights (top) and each top feature's share
of the issuer's numeric attention per quarter (bottom); blank: no report that quarter.</figcaption></figure>
{sentences}</article>"""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "firm"


def write_report(train_out_dir: str | Path, report_path: str | Path | None = None, *, dataset: str | Path | None = None,
                 financial_features: list[str] | None = None, macro_features: list[str] | None = None,
                 extractions: str | Path | pd.DataFrame | None = None, max_flagged: int = 10, top: int = 10,
                 title: str = "EMDLOT bond issuer risk report") -> Path:
    """The HTML report of a train output folder OUT (flows/train.py): OUT/tables, OUT/interpretations,
    OUT/explanations (built there if the train flow did not). Feature groups come from the arguments,
    else DATASET/meta.json, else OUT/splits/*/meta.json; key sentences from `extractions`, else
    OUT/text/*/extractions.parquet. Writes `report_path` (default OUT/report.html) and returns it."""
    out = Path(train_out_dir)
    report = Path(report_path) if report_path else out / "report.html"
    runs = load_interpretations(out / "interpretations")
    if financial_features is None and macro_features is None:
        financial_features, macro_features = _find_groups(out, dataset)
    sections = [_metrics_section(out / "tables")]
    folder = out / "explanations"
    toc = ["<li><a href='#metrics'>Performance on the test firms</a></li>"]
    if runs:
        paths = _explanations(runs, folder, financial_features, macro_features)
        sections += [_explanation_section(paths), _cluster_section(paths)]
        toc += ["<li><a href='#attention'>What the model looks at</a></li>", "<li><a href='#clusters'>Cluster phenotypes</a></li>"]
        flagged = flag_issuers(runs, max_flagged)
        texts = _find_extractions(out, extractions)
        articles = []
        for number, row in enumerate(flagged.itertuples(index=False), start=1):
            series = pd.Series(row._asdict())
            run = runs[int(series["run"])]
            explanation = explain.explain_firm(run, series["firm_id"], texts, top=top)
            figure = firm_figure(run, series["firm_id"], folder / "issuers" / f"{number:02d}-{_safe(series['firm_id'])}.png", top=top)
            articles.append(_issuer_article(number, series, explanation, figure))
        intro = (f"<p class='muted'>Test firms that the final runs call Extended or Defaulted (probabilities averaged "
                 f"over the runs that scored the firm), most likely distressed first; at most {max_flagged}. "
                 f"{len(flagged)} flagged.</p>")
        sections.append("<section id='issuers'><h2>4. Flagged issuers</h2>" + intro +
                        ("".join(articles) or "<p>No test firm is predicted Extended or Defaulted.</p>") + "</section>")
        toc.append("<li><a href='#issuers'>Flagged issuers</a></li>")
    else:
        sections.append(f"<p class='warning'>No interpretations in {html.escape(str(out / 'interpretations'))}: "
                        "the explanation sections are left out.</p>")
    runs_line = (f"{len(runs)} final EMDLOT run(s) over split(s) {sorted({r.split for r in runs})}, "
                 f"{len({f for r in runs for f in np.asarray(r.firm_id).astype(str)})} test firms." if runs else "")
    body = "\n".join(sections)
    expected = body.count("<img ")
    page = f"""<!DOCTYPE html>
<html lang="en" data-figures-expected="{expected}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<header><h1>{html.escape(title)}</h1>
<p class="muted">From {html.escape(out.name)}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. {runs_line}
Classes: {', '.join(CLASSES)}; Q-1 is the latest quarterly report before the prediction point.</p>
<p id="figure-warning" class="warning" hidden>Some figures did not load in this viewer.</p></header>
<nav><ol>{''.join(toc)}</ol></nav>
{body}
<footer class="muted"><p>EMDLOT: explainable multimodal deep learning for time series. Sections of the prospectus:
{', '.join(SECTION_LABELS[s] for s in SECTIONS)}.</p></footer>
<script>{CHECK_SCRIPT}</script>
</body></html>
"""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(page, encoding="utf-8")
    return report
