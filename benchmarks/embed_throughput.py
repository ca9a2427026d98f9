"""Documents per second of the Ray Data embedding stage against a direct loop, same model, same inputs.

    python benchmarks/embed_throughput.py [--model BERT_DIR] [--docs 64] [--batch-size 16]

Without --model a randomly initialised BERT of Chinese-BERT-wwm's shape (768 hidden,
12 layers, 12 heads) is built locally: random weights cost exactly the same compute as
the real ones. Inputs are fixture prospectus sections cut to the 510-token budget, the
size the pipeline feeds the encoder. Both paths are timed in this process:
- direct: BertEmbedder loaded here, batches in a plain loop (load time reported apart);
- ray_data: emdlot.text.pipeline.embed_documents, i.e. the pipeline's own stage
  (map_batches on the class UDF with ActorPoolStrategy, per-batch cache writes), timed
  from dataset creation to the last stored batch, actor start and model load included.
Writes benchmarks/results/embed_throughput.json. Target: ray_data / direct >= 0.8.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from emdlot.text.config import EmbedConfig
from emdlot.text.embed import BertEmbedder, choose_embedder
from emdlot.text.fixtures import budget_documents, build_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
from emdlot.text.pipeline import embed_documents  # noqa: E402


def direct_loop(model: Path, texts: list[str], batch_size: int) -> dict:
    start = time.perf_counter()
    embedder = BertEmbedder(str(model), pooling="cls", max_length=512)
    loaded = time.perf_counter()
    ordered = sorted(texts, key=len)  # the pipeline's order: similar lengths per batch
    vectors = [embedder.embed(ordered[i:i + batch_size]) for i in range(0, len(ordered), batch_size)]
    end = time.perf_counter()
    assert sum(len(v) for v in vectors) == len(texts)
    return {"load_s": loaded - start, "embed_s": end - loaded, "docs_per_s": len(texts) / (end - loaded),
            "docs_per_s_with_load": len(texts) / (end - start)}


def ray_data_stage(model: Path, texts: list[str], batch_size: int) -> dict:
    cfg = EmbedConfig.model_validate({"embedder": {"model": str(model), "batch_size": batch_size}})
    docs = pd.DataFrame({"firm_id": [f"B{i:04d}" for i in range(len(texts))], "section": "risk_factors",
                         "split": "train", "extracted": texts, "status": "ok"})
    stats: dict = {}
    with tempfile.TemporaryDirectory() as cache:
        embedded, _ = embed_documents(docs, cfg, choose_embedder(cfg.embedder), Path(cache), stats)
    assert stats["embed_computed"] == len(texts) and np.stack(embedded.embedding).shape[1] > 0
    return {"stage_s": stats["embed_seconds"], "docs_per_s": stats["embed_docs_per_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="BERT folder (default: a random BERT-base-shaped model)")
    p.add_argument("--docs", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed_throughput.json")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_bert(Path(tmp) / "bert-base-shape", hidden=768, layers=12, heads=12)
        texts = budget_documents(model, args.docs)
        ray.init(address="local", include_dashboard=False)
        ray_data = ray_data_stage(model, texts, args.batch_size)  # first: the direct loop warms no cache for it
        direct = direct_loop(model, texts, args.batch_size)
        ray.shutdown()
    result = {
        "model": str(args.model) if args.model else "random BERT-base shape (768 hidden, 12 layers)",
        "docs": args.docs, "batch_size": args.batch_size, "mean_chars": float(np.mean([len(t) for t in texts])),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "direct": direct, "ray_data": ray_data,
        "ratio_ray_data_vs_direct": ray_data["docs_per_s"] / direct["docs_per_s"],
        "ratio_ray_data_vs_direct_with_load": ray_data["docs_per_s"] / direct["docs_per_s_with_load"],
        "target_ratio": 0.8,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
