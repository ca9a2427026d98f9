"""The three key-information extraction backends, each a stage on a Ray Data dataset.

Input rows: key, section, text. Output rows: key, extracted, raw_response.
- extractive: no model, sentence scoring within the token budget (emdlot.text.extractive).
- transformers: a local causal language model, greedy generation, on CPU or GPU.
- vllm: Ray Data LLM (vLLMEngineProcessorConfig + build_processor); vLLM is imported by
  Ray only when the engine starts, so this module loads without it.
Requests and answers go through emdlot.text.prompts for both model backends.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import ray

from emdlot.text.config import ExtractConfig, ExtractiveConfig, LLMConfig
from emdlot.text.extractive import extract_key_sentences
from emdlot.text.prompts import build_messages, build_request, parse_output_row, parse_response
from emdlot.text.tokens import TokenCounter, approx_token_count, tokenizer_counter

OUTPUT_COLUMNS = ("key", "extracted", "raw_response")


def load_token_counter(tokenizer_path: str | None) -> TokenCounter:
    """The embedder's token count when a BERT tokenizer is at hand, else the approximation."""
    if tokenizer_path is None:
        return approx_token_count
    from transformers import AutoTokenizer

    return tokenizer_counter(AutoTokenizer.from_pretrained(tokenizer_path))


class ExtractiveExtractor:
    """Ray Data class-based UDF: loads the token counter once, extracts key sentences."""

    def __init__(self, tokenizer_path: str | None, budget: int, cfg: dict):
        self.count = load_token_counter(tokenizer_path)
        self.budget = budget
        self.cfg = ExtractiveConfig.model_validate(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [extract_key_sentences(str(t), self.count, self.budget, self.cfg).text for t in batch["text"]]
        return {"key": batch["key"], "extracted": np.asarray(texts, dtype=object),
                "raw_response": np.full(len(texts), "", dtype=object)}


class CausalLMExtractor:
    """Ray Data class-based UDF: a local causal LM writes each section's key information."""

    def __init__(self, model_path: str, cfg: dict, budget_chars: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = LLMConfig.model_validate(cfg)
        self.torch = torch
        self.device = self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=self.cfg.trust_remote_code)
        self.tokenizer.padding_side = "left"  # generation continues at the right end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, trust_remote_code=self.cfg.trust_remote_code
        ).to(self.device).eval()
        self.budget_chars = budget_chars

    def _prompt(self, section: str, text: str) -> str:
        messages = build_messages(section, text, self.budget_chars, self.cfg.max_input_chars)
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [self._prompt(str(s), str(t)) for s, t in zip(batch["section"], batch["text"])]
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = self.cfg.temperature > 0
        with self.torch.inference_mode():
            out = self.model.generate(
                **encoded, max_new_tokens=self.cfg.max_new_tokens, do_sample=sample,
                **({"temperature": self.cfg.temperature, "top_p": self.cfg.top_p} if sample else {}),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        answers = self.tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        return {"key": batch["key"], "extracted": np.asarray([parse_response(a) for a in answers], dtype=object),
                "raw_response": np.asarray(answers, dtype=object)}


def _has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def extractive_stage(ds: ray.data.Dataset, cfg: ExtractConfig, tokenizer_path: str | None) -> ray.data.Dataset:
    return ds.map_batches(
        ExtractiveExtractor,
        fn_constructor_kwargs={"tokenizer_path": tokenizer_path, "budget": cfg.token_budget,
                               "cfg": cfg.extractive.model_dump()},
        compute=ray.data.ActorPoolStrategy(size=cfg.extractive.num_actors),
        batch_size=cfg.extractive.batch_size,
        num_cpus=1,
    )


def transformers_stage(ds: ray.data.Dataset, cfg: ExtractConfig) -> ray.data.Dataset:
    return ds.map_batches(
        CausalLMExtractor,
        fn_constructor_kwargs={"model_path": cfg.llm.model, "cfg": cfg.llm.model_dump(),
                               "budget_chars": cfg.token_budget},
        compute=ray.data.ActorPoolStrategy(size=cfg.llm.num_actors),
        batch_size=cfg.llm.batch_size,
        num_gpus=1 if _has_gpus() and cfg.llm.device != "cpu" else 0,
        num_cpus=1,
    )


def vllm_processor_config(cfg: ExtractConfig):
    """The vLLMEngineProcessorConfig for `cfg` (buildable without vLLM installed)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    stage = {"num_cpus": cfg.vllm.cpu_stage_num_cpus} if cfg.vllm.cpu_stage_num_cpus is not None else True
    engine_kwargs = {**cfg.vllm.engine_kwargs, "trust_remote_code": cfg.llm.trust_remote_code}
    return vLLMEngineProcessorConfig(
        model_source=cfg.llm.model,
        engine_kwargs=engine_kwargs,
        concurrency=cfg.vllm.concurrency,
        batch_size=cfg.vllm.batch_size,
        accelerator_type=cfg.vllm.accelerator_type,
        placement_group_config=cfg.vllm.placement_group_config,
        log_engine_metrics=cfg.vllm.log_engine_metrics,
        chat_template_stage=stage,
        tokenize_stage=stage,
        detokenize_stage=stage,
    )


def build_vllm_processor(cfg: ExtractConfig):
    """Ray Data LLM processor: prompt rows in (emdlot.text.prompts), parsed answers out."""
    from ray.data.llm import build_processor

    return build_processor(
        vllm_processor_config(cfg),
        preprocess=partial(build_request, cfg=cfg.llm, budget_chars=cfg.token_budget),
        postprocess=parse_output_row,
    )


def extraction_stage(ds: ray.data.Dataset, cfg: ExtractConfig, tokenizer_path: str | None) -> ray.data.Dataset:
    """Apply the configured backend to rows (key, section, text)."""
    if cfg.backend == "extractive":
        return extractive_stage(ds, cfg, tokenizer_path)
    if cfg.backend == "transformers":
        return transformers_stage(ds, cfg)
    if cfg.backend == "vllm":
        return build_vllm_processor(cfg)(ds)
    raise ValueError(f"unknown extraction backend {cfg.backend!r}")
