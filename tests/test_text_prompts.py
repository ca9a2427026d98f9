"""The LLM seam: request building and response parsing, and the Ray Data LLM processor built without vLLM."""
import pytest

from emdlot.text.config import ExtractConfig, LLMConfig
from emdlot.text.prompts import (SECTION_TITLES, SYSTEM_PROMPT, build_messages, build_request, parse_output_row,
                                 parse_response)


def test_request_holds_the_section_prompt_the_budget_and_greedy_sampling():
    cfg = LLMConfig(max_new_tokens=300, max_input_chars=10)
    row = {"key": "k1", "section": "risk_factors", "text": "发行人资产负债率为85%，偿债压力大。其余内容"}
    req = build_request(row, cfg=cfg, budget_chars=480)
    assert req["key"] == "k1"
    system, user = req["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    assert SECTION_TITLES["risk_factors"] in user["content"] and "不超过480个字" in user["content"]
    assert user["content"].endswith(row["text"][:10])  # source cut to max_input_chars
    assert row["text"][:11] not in user["content"]
    assert req["sampling_params"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 300}


def test_each_section_gets_its_own_title():
    a = build_messages("important_notice", "正文", 100, 1000)[1]["content"]
    b = build_messages("risk_factors", "正文", 100, 1000)[1]["content"]
    assert "重大事项提示" in a and "风险因素" in b and a != b


def test_unknown_section_is_an_error():
    with pytest.raises(ValueError, match="unknown prospectus section 'summary'"):
        build_messages("summary", "正文", 100, 1000)


@pytest.mark.parametrize("raw, expected", [
    ("<think>先分析一下。</think>\n发行人资产负债率较高。", "发行人资产负债率较高。"),
    ("关键信息：发行人存在逾期债务。", "发行人存在逾期债务。"),
    ("```\n1. 短期偿债压力大。\n2. 对外担保较多。\n```", "短期偿债压力大。\n对外担保较多。"),
    ("- **流动性**紧张。\n- 诉讼 金额 较大。", "流动性紧张。\n诉讼金额较大。"),
    ("<think>未结束的推理", ""),
    ("", ""),
    (None, ""),
])
def test_parse_response_cleans_model_answers(raw, expected):
    assert parse_response(raw) == expected


def test_postprocess_row_keeps_key_parsed_and_raw_answer():
    out = parse_output_row({"key": "k", "generated_text": "摘要：净利润下滑。", "messages": []})
    assert out == {"key": "k", "extracted": "净利润下滑。", "raw_response": "摘要：净利润下滑。"}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_vllm_processor_builds_without_vllm(local_ray, tmp_path):
    """build_processor wires preprocess -> chat template -> tokenize -> vLLM -> detokenize -> postprocess."""
    from emdlot.text.fixtures import build_tiny_glm4

    from emdlot.text.extract import build_vllm_processor, vllm_processor_config

    model = build_tiny_glm4(tmp_path / "glm4")
    cfg = ExtractConfig.model_validate({
        "backend": "vllm", "llm": {"model": str(model)},
        "vllm": {"batch_size": 4, "placement_group_config": {"bundle_per_worker": {"CPU": 1}},
                 "cpu_stage_num_cpus": 0.25, "engine_kwargs": {"max_model_len": 2048}},
    })
    config = vllm_processor_config(cfg)
    assert config.model_source == str(model) and config.batch_size == 4
    assert config.engine_kwargs["max_model_len"] == 2048 and config.engine_kwargs["trust_remote_code"] is False
    assert config.placement_group_config["bundle_per_worker"]["CPU"] == 1
    processor = build_vllm_processor(cfg)
    assert processor.list_stage_names() == ["ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"]
    for name in ("ChatTemplateStage", "TokenizeStage", "DetokenizeStage"):
        assert processor.get_stage_by_name(name).map_batches_kwargs["num_cpus"] == 0.25
    engine = processor.get_stage_by_name("vLLMEngineStage").fn_constructor_kwargs
    assert engine["model"] == str(model) and engine["batch_size"] == 4
