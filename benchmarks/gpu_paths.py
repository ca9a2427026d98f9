"""The GPU paths, checked and measured on a lent GPU machine (the CPU machine cannot).

    python benchmarks/gpu_paths.py [--docs 2048] [--out benchmarks/results/gpu_paths.json]

1. BERT embedding: `BertEmbedder` (the class the Ray Data stage runs in each actor) on CUDA
   against the same class on the CPU: the same vectors, and documents per second. A random
   BERT of Chinese-BERT-wwm's shape (768 hidden, 12 layers) stands in for the weights, which
   cannot be downloaded there; random weights cost the same compute.
2. Key-information extraction, `transformers` backend: `CausalLMExtractor` with a small random
   `Glm4ForCausalLM` (GLM-4-9B-0414's architecture) generating on CUDA; answers parsed.
3. The model: the T-LSTM's hand-written backward on CUDA against the CPU (float64), one
   training epoch at the paper's size and Table 5 settings on CUDA against the CPU, and a
   short `fit` on CUDA end to end.

Ray and vLLM are not part of this check: their wheels (79 MB, over 400 MB) exceed what can
be carried to the lent machine, which has no network. Everything above is the code those
stages call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

if "ray" not in sys.modules:
    try:
        import ray  # noqa: F401
    except ImportError:  # extract.py imports ray for its stages; the UDF classes used here never call it
        sys.modules["ray"] = types.ModuleType("ray")

from emdlot.text.fixtures import budget_documents, build_tiny_bert, build_tiny_glm4, section_text  # noqa: E402

from emdlot.data.arrays import SequenceArrays  # noqa: E402
from emdlot.model import EMDLOT, to_batch  # noqa: E402
from emdlot.training.config import EMDLOTConfig  # noqa: E402
from emdlot.model.tlstm import TLSTM  # noqa: E402
from emdlot.text.embed import BertEmbedder  # noqa: E402
from emdlot.text.extract import CausalLMExtractor  # noqa: E402
from emdlot.training import fit  # noqa: E402
from emdlot.training.loop import _train_one_epoch  # noqa: E402

FINANCIAL, MACRO, QUARTERS, PCA_DIMS = 32, 36, 39, 40  # the paper's feature counts and sequence length
PAPER_TRAIN_ROWS = 3 * 1565  # Table 4 after SMOTE
DEVICE = "cuda"  # --device cpu dry-runs this script on a machine without a GPU


def on_device(device: str) -> str:
    """Each check's accelerator side, which a dry run moves to the CPU."""
    return DEVICE if device == "cuda" else device


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def embed_all(embedder: BertEmbedder, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = [embedder.embed(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    sync()
    return np.concatenate(out), time.perf_counter() - start


def check_bert(tmp: Path, n_docs: int) -> dict:
    model = build_tiny_bert(tmp / "bert-base-shape", hidden=768, layers=12, heads=12)
    texts = sorted(budget_documents(model, n_docs, max_sentences=60), key=len)  # the pipeline orders by length too
    gpu = BertEmbedder(str(model), pooling="cls", max_length=512, device=on_device("cuda"))
    cpu = BertEmbedder(str(model), pooling="cls", max_length=512, device="cpu", torch_threads=os.cpu_count())
    embed_all(gpu, texts[:64], 32)  # warm-up
    sample = texts[:: max(1, len(texts) // 64)][:64]
    same = float(np.abs(gpu.embed(sample) - cpu.embed(sample)).max())
    cpu_vectors, cpu_s = embed_all(cpu, texts[:128], 16)
    result = {"docs": len(texts), "mean_chars": float(np.mean([len(t) for t in texts])),
              "max_abs_diff_gpu_vs_cpu": same, "cpu_docs_per_s_batch16": 128 / cpu_s, "gpu": {}}
    for batch_size in (16, 64, 256):
        vectors, seconds = embed_all(gpu, texts, batch_size)
        assert vectors.shape == (len(texts), 768) and np.isfinite(vectors).all()
        result["gpu"][f"batch{batch_size}_docs_per_s"] = len(texts) / seconds
    result["gpu_vs_cpu_speedup_batch64"] = result["gpu"]["batch64_docs_per_s"] / result["cpu_docs_per_s_batch16"]
    return result


def check_extraction(tmp: Path) -> dict:
    model = build_tiny_glm4(tmp / "glm4-tiny")
    extractor = CausalLMExtractor(str(model), {"device": on_device("cuda"), "max_new_tokens": 64}, budget_chars=450)
    rng = random.Random(1)
    sections = np.array(["important_notice", "risk_factors"] * 16, dtype=object)
    texts = np.array([section_text(s, rng.random(), 20, rng) for s in sections], dtype=object)
    start = time.perf_counter()
    out = extractor({"key": np.arange(len(texts)), "section": sections, "text": texts})
    seconds = time.perf_counter() - start
    assert list(out["key"]) == list(range(len(texts)))
    return {"device": str(next(extractor.model.parameters()).device), "docs": len(texts), "seconds": seconds,
            "raw_nonempty": int(sum(bool(r) for r in out["raw_response"])),
            "parsed_strings": int(sum(isinstance(e, str) for e in out["extracted"]))}


def check_tlstm() -> dict:
    torch.manual_seed(0)
    layer = TLSTM(16, 24).double()
    x = torch.randn(5, 11, 16, dtype=torch.float64)
    delta_t = torch.rand(5, 11, dtype=torch.float64) * 12
    mask = torch.rand(5, 11) > 0.2
    results = {}
    for device in ("cpu", "cuda"):
        layer.to(on_device(device)).zero_grad()
        xs = x.to(on_device(device)).detach().requires_grad_()  # a fresh leaf per device
        h, c = layer(xs, delta_t.to(on_device(device)), mask.to(on_device(device)))
        (h.square().sum() + c.sum()).backward()
        # clone: on the CPU .cpu() returns the same tensor, and moving the layer would move its grads
        results[device] = [t.detach().clone().cpu() for t in [h, xs.grad, *(p.grad for p in layer.parameters())]]
    diff = max(float((a - b).abs().max()) for a, b in zip(results["cpu"], results["cuda"]))
    return {"max_abs_diff_cpu_vs_cuda_float64": diff}


def paper_shaped_arrays(n: int, seed: int) -> SequenceArrays:
    """Balanced random sequences of the paper's shape with a planted ramp, so a fit has signal."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    features = FINANCIAL + MACRO
    x = rng.normal(size=(n, QUARTERS, features)).astype(np.float32)
    lengths = rng.integers(4, QUARTERS + 1, size=n)
    mask = np.arange(QUARTERS)[None, :] >= (QUARTERS - lengths)[:, None]
    x[~mask] = 0.0
    x[:, :, 0] += np.linspace(0, 2, QUARTERS)[None, :] * (y == 1)[:, None] * mask
    x[:, :, 1] += np.linspace(0, 2, QUARTERS)[None, :] * (y == 2)[:, None] * mask
    delta_t = np.where(mask, 3.0, 0.0).astype(np.float32)
    text = rng.normal(size=(n, 2, PCA_DIMS)).astype(np.float32)
    return SequenceArrays(firm_id=np.array([f"g{seed}-{i}" for i in range(n)]), X=x, mask=mask, delta_t=delta_t,
                          text=text, text_mask=np.ones(n, bool), y=y.astype(np.int64))


def epoch_seconds(arrays: SequenceArrays, config: EMDLOTConfig, device: str) -> float:
    torch.manual_seed(0)
    batch = to_batch(arrays, device=device)
    model = EMDLOT(config.model, num_features=arrays.X.shape[2], num_sections=2, text_dim=PCA_DIMS).to(device)
    optimizer = config.train.optimizer(model.parameters())
    start = time.perf_counter()
    _train_one_epoch(model, optimizer, batch, config, torch.Generator().manual_seed(0))
    sync()
    return time.perf_counter() - start


def check_training(train_rows: int, cpu_rows: int) -> dict:
    config = EMDLOTConfig()  # Table 5 optimum: hidden 512, batch 8, K = 8
    train = paper_shaped_arrays(train_rows, 0)
    torch.set_num_threads(os.cpu_count())
    gpu_s = epoch_seconds(train, config, on_device("cuda"))
    cpu_part = SequenceArrays(**{k: v[:cpu_rows] for k, v in vars(train).items()})  # the CPU is timed on a slice
    cpu_s = epoch_seconds(cpu_part, config, "cpu") * train_rows / cpu_rows
    short = config.with_params({"max_epochs": 4, "device": on_device("cuda"), "progress": False})
    result = fit(train, paper_shaped_arrays(300, 1), short, seed=0)
    epochs = result.history.epochs
    return {"train_rows": train_rows, "gpu_epoch_s": gpu_s, "cpu_epoch_s_extrapolated": cpu_s,
            "cpu_rows_timed": cpu_rows, "gpu_vs_cpu_speedup": cpu_s / gpu_s,
            "fit_cuda": {"epochs": len(epochs), "wall_s": result.history.wall_time_s,
                         "val_scores": [e.val_score for e in epochs],
                         "model_device": str(next(result.model.parameters()).device)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=2048)
    p.add_argument("--train-rows", type=int, default=PAPER_TRAIN_ROWS)
    p.add_argument("--cpu-rows", type=int, default=400)
    p.add_argument("--only", nargs="+", choices=["tlstm", "bert", "extraction", "training"],
                   help="run these checks and merge them into an existing --out file")
    p.add_argument("--device", default="cuda", help="'cpu' dry-runs the script (the numbers then mean nothing)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_paths.json")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_paths.py needs a CUDA device")
    result = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    result |= {"gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "none (dry run)", "torch": torch.__version__, "cpus": os.cpu_count(),
              "platform": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in [("tlstm", check_tlstm), ("bert", lambda: check_bert(Path(tmp), args.docs)),
                            ("extraction", lambda: check_extraction(Path(tmp))),
                            ("training", lambda: check_training(args.train_rows, args.cpu_rows))]:
            if args.only and name not in args.only:
                continue
            start = time.perf_counter()
            try:
                result[name] = check()
            except Exception as error:  # record and go on: one broken path must not hide the others
                result[name] = {"error": f"{type(error).__name__}: {error}"}
            result[name]["check_s"] = time.perf_counter() - start
            print(name, json.dumps(result[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
