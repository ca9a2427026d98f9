"""What `emdlot explain` and `emdlot report` do, behind a thin CLI: load, call the evaluation layer, print.

    emdlot explain OUT/interpretations/EMDLOT-split86-seed86.npz --firm F00012 [--extractions FILE] [--json]
    emdlot report OUT [--out OUT/report.html] [--data DATASET] [--extractions FILE] [--max-flagged 10]
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from emdlot.evaluation.explain import InterpretedRun, explain_firm, load_extractions
from emdlot.schema import CLASSES, SECTION_LABELS


def format_explanation(e: dict) -> str:
    """A readable plain-text summary of `explain_firm`'s dict."""
    lines = [f"Issuer {e['firm_id']}: predicted {e['predicted_class']}"
             + (f" (true class {e['true_class']})" if e["true_class"] else ""),
             f"  run {e['run']['model']} split {e['run']['split']} seed {e['run']['seed']}; {e['quarters']} quarters of reports",
             "  probabilities: " + ", ".join(f"{c} {100 * e['probabilities'][c]:.1f}%" for c in CLASSES),
             f"  cluster {e['cluster']} (memberships " + ", ".join(f"{k}: {100 * p:.0f}%" for k, p in enumerate(e["cluster_membership"])) + ")",
             "  modalities: " + ", ".join(f"{m} {100 * w:.1f}%" for m, w in e["modality_weights"].items() if w > 0)]
    if e["chapter_weights"]:
        lines.append("  prospectus chapters: " + ", ".join(f"{SECTION_LABELS.get(s, s)} {100 * w:.1f}%" for s, w in e["chapter_weights"].items()))
    lines.append("  features that drove the prediction (share of the numeric attention; peak quarter):")
    for rank, f in enumerate(e["top_features"], start=1):
        lines.append(f"    {rank:>2}. {f['feature']:<14} {f['share_pct']:5.1f}%   peak {f['peak_quarter']} ({f['peak_share_pct']:.1f}%)")
    weights = sorted(e["temporal_weights"].items(), key=lambda kv: -kv[1])[:4]
    lines.append("  quarters that counted most: " + ", ".join(f"{q} {100 * w:.1f}%" for q, w in weights))
    for s in e["key_sentences"]:
        lines.append(f"  {SECTION_LABELS.get(s['section'], s['section'])}, key sentences:")
        lines += textwrap.wrap(s["text"], width=100, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def _error(message: str) -> int:
    print(f"emdlot explain: error: {message}", file=sys.stderr)
    return 2


def run_explain(interpretation: str | Path, firm: str, extractions: str | Path | None = None, top: int = 10,
                as_json: bool = False, out: TextIO | None = None, data: str | Path | None = None,
                tracking_uri: str | None = None) -> int:
    """Print one issuer's explanation: from a saved InterpretedRun (RUN.npz), or, with `data`, by scoring the firm
    of that contract folder with a model (`models:/emdlot/N`, `runs:/...`, a package folder); exit 2 on bad input."""
    out = out or sys.stdout
    try:
        run = InterpretedRun.load(interpretation) if data is None else _score(interpretation, data, firm, tracking_uri)
    except (ValueError, OSError, KeyError) as err:
        if data is not None:
            return _error(str(err).splitlines()[0] if str(err) else type(err).__name__)
        return _error(f"{interpretation}: not an interpretation saved by flows/train.py ({err})")
    try:
        texts = load_extractions(extractions)
    except (ValueError, OSError) as err:
        return _error(f"{extractions}: cannot read the extractions ({err})")
    try:
        explanation = explain_firm(run, firm, texts, top=top)
    except KeyError as err:
        return _error(err.args[0])
    print(json.dumps(explanation, indent=2, ensure_ascii=False) if as_json else format_explanation(explanation), file=out)
    return 0


def _score(model: str | Path, data: str | Path, firm: str, tracking_uri: str | None) -> InterpretedRun:
    """The firm of a contract folder, scored and explained by the model (Ray started only for text)."""
    from emdlot import tracking
    from emdlot.ray_init import init_ray
    from emdlot.scoring.predict import interpret_firm

    return interpret_firm(str(model), Path(data).resolve(), firm, tracking.tracking_uri(tracking_uri), start_ray=init_ray)


def run_report(train_out: str | Path, report: str | Path | None = None, dataset: str | Path | None = None,
               extractions: str | Path | None = None, max_flagged: int = 10) -> int:
    """Write the HTML report of a train output folder and say where it is."""
    from emdlot.evaluation.report import write_report

    if not Path(train_out).is_dir():
        raise FileNotFoundError(f"{train_out}: not a folder (the --out of flows/train.py)")
    if not any((Path(train_out) / part).is_dir() for part in ("tables", "interpretations")):
        raise FileNotFoundError(f"{train_out}: no tables/ or interpretations/ folder; not the --out of flows/train.py")
    path = write_report(train_out, report, dataset=dataset, extractions=extractions, max_flagged=max_flagged)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained; open it in any browser)")
    return 0
