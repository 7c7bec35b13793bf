"""The tiny checkpoints mirror the real ones: Qwen's special tokens, chat templates, config ids; seeded."""

from __future__ import annotations

import json

from make_tiny_models import MODELS, OMNI_ADDED_TOKENS, OMNI_NAMED_TOKENS, QWEN3_ADDED_TOKENS


def test_building_twice_writes_identical_weights_and_tokenizer(tiny_qwen3_dir, tmp_path):
    again = MODELS["qwen3"](tmp_path / "qwen3")

    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert (again / name).read_bytes() == (tiny_qwen3_dir / name).read_bytes(), name


def test_qwen3_template_switches_thinking_off_with_an_empty_think_block(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Check this caption."},
    ]

    def render(**kwargs) -> str:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)

    head = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCheck this caption.<|im_end|>\n"
    assert render() == head + "<|im_start|>assistant\n"
    assert render(enable_thinking=True) == head + "<|im_start|>assistant\n"
    assert render(enable_thinking=False) == head + "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def test_qwen3_template_keeps_reasoning_only_after_the_last_user_turn(tiny_qwen3_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    answer = {"role": "assistant", "content": "<think>\nHm.\n</think>\n\nYes."}
    earlier = [{"role": "user", "content": "One?"}, answer, {"role": "user", "content": "Two?"}]

    assert tokenizer.apply_chat_template(earlier, tokenize=False).endswith(
        "<|im_start|>assistant\nYes.<|im_end|>\n<|im_start|>user\nTwo?<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(earlier[:2], tokenize=False).endswith(
        "<|im_start|>assistant\n<think>\nHm.\n</think>\n\nYes.<|im_end|>\n"
    )


def test_added_tokens_are_single_tokens_in_qwens_order(tiny_qwen3_dir, tiny_omni_instruct_dir):
    from transformers import AutoTokenizer

    for folder, added in (
        (tiny_qwen3_dir, QWEN3_ADDED_TOKENS),
        (tiny_omni_instruct_dir, QWEN3_ADDED_TOKENS + OMNI_ADDED_TOKENS),
    ):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = [tokenizer.convert_tokens_to_ids(token) for token in added]
        assert ids == list(range(ids[0], ids[0] + len(added)))
        assert all(
            tokenizer.encode(token, add_special_tokens=False) == [i]
            for token, i in zip(added, ids, strict=True)
        )
        assert tokenizer.eos_token == "<|im_end|>"
        assert tokenizer.pad_token == "<|endoftext|>"
        # Role names are single tokens, as in Qwen's vocabulary.
        assert all(
            len(tokenizer.encode(role, add_special_tokens=False)) == 1
            for role in ("system", "user", "assistant")
        )


def test_omni_processor_and_config_agree_with_the_tokenizer(tiny_omni_instruct_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_omni_instruct_dir)
    tokenizer = processor.tokenizer
    assert type(processor).__name__ == "Qwen3OmniMoeProcessor"
    assert {name: getattr(tokenizer, name) for name in OMNI_NAMED_TOKENS} == OMNI_NAMED_TOKENS
    assert processor.feature_extractor.feature_size == 128

    config = json.loads((tiny_omni_instruct_dir / "config.json").read_text())
    thinker = config["thinker_config"]
    ids = tokenizer.convert_tokens_to_ids
    assert config["architectures"] == ["Qwen3OmniMoeForConditionalGeneration"]
    assert config["enable_audio_output"] is False
    assert (thinker["audio_token_id"], thinker["audio_start_token_id"], thinker["audio_end_token_id"]) == (
        ids("<|audio_pad|>"), ids("<|audio_start|>"), ids("<|audio_end|>"),
    )  # fmt: skip
    assert thinker["text_config"]["vocab_size"] >= len(tokenizer)
    text = thinker["text_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
