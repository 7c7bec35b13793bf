"""Build tiny random-weight checkpoints with the real classes, processors, tokenizers and chat templates.

No model weights can be downloaded here, so tests and the LLM demo run on these: same architectures and
file layouts as the real models (vLLM, transformers, demucs and pyannote load them through their ordinary
code paths), a few hundred kilobytes to a few megabytes each, built in seconds on a CPU. Their output is
noise; their plumbing is real. Everything is seeded, so the same command writes the same weights.

    python scripts/make_tiny_models.py --out models/tiny
    python scripts/make_tiny_models.py --out models/tiny --only qwen3 demucs

Folders written under --out (one per model, named as in MODELS):
    qwen3-omni-instruct    Qwen3-Omni thinker given a text prompt with audio (as Qwen3-Omni-30B-A3B-Instruct)
    qwen3-omni-captioner   the same architecture given audio alone (as Qwen3-Omni-30B-A3B-Captioner)
    qwen3                  Qwen3ForCausalLM with the Qwen3 chat template (thinking on/off)
    demucs                 demucs repo folder: `demucs.pretrained.get_model(DEMUCS_NAME, repo=folder)`
    pyannote-diarization   speaker-diarization-community-1 layout: `pyannote.audio.Pipeline.from_pretrained`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

# The pyannote pipeline is built from the real segmentation weights that `make env` extracts.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED = 0
# Wider than the usual 0.02 so that a random model's next-token logits are far apart: greedy decoding
# then depends on the input (audio included) and is the same in vLLM's kernels and in transformers'.
INIT_STD = 0.2
DEMUCS_NAME = "tiny-htdemucs"

# Qwen3's added tokens, in id order after the BPE vocabulary (151643.. in the real models).
QWEN3_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
)  # fmt: skip
# Qwen3-Omni adds the audio and talker tokens after those.
OMNI_ADDED_TOKENS = (
    "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>",
    "<tts_text_bos_single>", "<|audio_pad|>",
)  # fmt: skip
# In the real tokenizers these are added tokens but not special: they survive skip_special_tokens.
NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
# Named multimodal tokens the Qwen3-Omni processor reads from its tokenizer (tokenizer.audio_token ...).
OMNI_NAMED_TOKENS = {
    "audio_token": "<|audio_pad|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}
BPE_VOCAB_SIZE = 1024
# A fixed corpus keeps the learned merges deterministic; it covers the words our prompts, captions
# and JSON verdicts use so that they tokenize into a handful of tokens each.
TOKENIZER_CORPUS = (
    # Role names open a line in the chat template ("<|im_start|>user\n"), so they must be tokens there.
    "system\nuser\nassistant\ntool\nYou are a helpful assistant.",
    "Describe the speaking style of the voice in this recording in one sentence.",
    "The speaker talks slowly with a low pitch, a calm tone and a clear, steady voice.",
    "A young woman speaks quickly and brightly; her pitch rises at the end of each phrase.",
    "An older man whispers in a breathy, hoarse voice, pausing often between words.",
    "Does the caption describe background noise, the environment or recording quality?",
    "Does it quote or transcribe the words, state an absence, or describe more than one speaker?",
    'Answer with JSON: {"items": [{"id": "background", "passed": true, "reason": "no"}], "passed": false}',
    "0 1 2 3 4 5 6 7 8 9 10 100 0.5 -1 true false null [] {}",
    '" : , . ; ! ? ( ) < > / \\ | _ - + = * # @ & % $',
    "<think>\nLet me check each item of the checklist.\n</think>\n\n",
)
QWEN3_CHAT_TEMPLATE = (Path(__file__).resolve().parent / "chat_templates" / "qwen3.jinja").read_text()
QWEN3_OMNI_CHAT_TEMPLATE = (
    Path(__file__).resolve().parent / "chat_templates" / "qwen3_omni.jinja"
).read_text()


def train_qwen_tokenizer(added_tokens: tuple[str, ...], named_tokens: dict[str, str]):
    """A byte-level BPE trained on TOKENIZER_CORPUS, wrapped as Qwen's own tokenizer class."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS * 8, trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # Added tokens take the ids right after the BPE vocabulary, in Qwen's order.
    for token in added_tokens:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
        extra_special_tokens=named_tokens or None,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=t not in NOT_SPECIAL, normalized=False) for t in added_tokens]
    )
    for token in added_tokens:
        assert tokenizer.convert_tokens_to_ids(token) == vocab[token], token
    return tokenizer


def padded_vocab_size(tokenizer) -> int:
    """The embedding rows: every token id, rounded up to a multiple of 64 as the real models are."""
    return (len(tokenizer) + 63) // 64 * 64


def seed_everything(seed: int = SEED) -> None:
    import torch

    torch.manual_seed(seed)


def build_qwen3(out: Path) -> Path:
    """Qwen3ForCausalLM (2 layers, head_dim 64: vLLM's CPU attention takes 32 or 64, not 16)."""
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = train_qwen_tokenizer(QWEN3_ADDED_TOKENS, {})
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3Config(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        initializer_range=INIT_STD,
        tie_word_embeddings=True,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    seed_everything()
    model = Qwen3ForCausalLM(config)
    # Qwen3's own sampling defaults (vLLM and transformers read them when a request sets none).
    model.generation_config = GenerationConfig(
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.6,
        top_k=20,
        top_p=0.95,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_qwen3_omni(out: Path, seed: int = SEED) -> Path:
    """Qwen3-Omni MoE thinker (audio encoder, vision encoder, MoE text model) without the talker.

    Saved as `Qwen3OmniMoeForConditionalGeneration` with enable_audio_output=False, the architecture the
    real checkpoints name and vLLM maps to its thinker. As with the real models, the Instruct and the
    Captioner share classes, processor, tokenizer and chat template and differ in their weights (here:
    the seed); the Captioner is used with audio alone, and its template then renders no text at all.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeConfig,
        Qwen3OmniMoeForConditionalGeneration,
        Qwen3OmniMoeProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = train_qwen_tokenizer(QWEN3_ADDED_TOKENS + OMNI_ADDED_TOKENS, OMNI_NAMED_TOKENS)
    ids = tokenizer.convert_tokens_to_ids
    text_hidden = 128
    text_config = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": text_hidden,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head_dim 64: vLLM's CPU attention takes 32 or 64
        "num_key_value_heads": 1,
        "moe_intermediate_size": 64,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 4096,
        "initializer_range": INIT_STD,
        # Interleaved multimodal RoPE as in the real model; sum(mrope_section) must be head_dim / 2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": [16, 8, 8],
            "interleaved": True,
            "mrope_interleaved": True,
        },
    }
    audio_config = {
        "num_mel_bins": 128,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "d_model": 32,
        "downsample_hidden_size": 16,
        "output_dim": text_hidden,
    }
    vision_config = {
        "depth": 1,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": text_hidden,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }
    thinker_config = {
        "text_config": text_config,
        "audio_config": audio_config,
        "vision_config": vision_config,
        "audio_token_id": ids("<|audio_pad|>"),
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "audio_start_token_id": ids("<|audio_start|>"),
        "user_token_id": ids("user"),
        "initializer_range": INIT_STD,
    }
    config = Qwen3OmniMoeConfig(
        thinker_config=thinker_config,
        enable_audio_output=False,
        initializer_range=INIT_STD,
        im_start_token_id=ids("<|im_start|>"),
        im_end_token_id=ids("<|im_end|>"),
        tts_pad_token_id=ids("<tts_pad>"),
        tts_bos_token_id=ids("<tts_text_bos>"),
        tts_eos_token_id=ids("<tts_text_eod>"),
        system_token_id=ids("system"),
        user_token_id=ids("user"),
        assistant_token_id=ids("assistant"),
    )
    # transformers' rope index reads vision_start_token_id, which the thinker config class lacks.
    config.thinker_config.vision_start_token_id = ids("<|vision_start|>")
    seed_everything(seed)
    model = Qwen3OmniMoeForConditionalGeneration(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")], pad_token_id=ids("<|endoftext|>")
    )
    model.save_pretrained(out)
    add_config_keys_vllm_reads(out / "config.json", ids)

    processor = Qwen3OmniMoeProcessor(
        # Image and video processors are part of the real processor; vLLM builds them even for audio.
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        # Whisper log-mel features, 128 bins at 16 kHz, up to 300 s per audio, as the real processor.
        feature_extractor=WhisperFeatureExtractor(
            feature_size=128,
            sampling_rate=16000,
            hop_length=160,
            chunk_length=300,
            n_fft=400,
            dither=0.0,
            return_attention_mask=True,
        ),
        tokenizer=tokenizer,
        chat_template=QWEN3_OMNI_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


def add_config_keys_vllm_reads(config_json: Path, ids: Callable[[str], int]) -> None:
    """Keys the real config.json carries and vLLM's Qwen3-Omni thinker reads, which transformers drops."""
    config = json.loads(config_json.read_text())
    thinker = config["thinker_config"]
    thinker["audio_end_token_id"] = ids("<|audio_end|>")
    thinker["vision_start_token_id"] = ids("<|vision_start|>")
    thinker["vision_end_token_id"] = ids("<|vision_end|>")
    thinker["vision_config"]["image_size"] = 768
    thinker["vision_config"]["apply_vit_abs_pos_embed"] = True
    thinker["text_config"]["tie_word_embeddings"] = False
    config_json.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def build_demucs(out: Path) -> Path:
    """A small random HTDemucs in the layout of a demucs model repo, loadable offline with
    `demucs.pretrained.get_model(DEMUCS_NAME, repo=out)`.

    As in the real htdemucs release: the model is `<signature>-<sha256[:8]>.th` (demucs's own
    serialisation, half-precision state, checksum verified on load) and `<DEMUCS_NAME>.yaml` names it as
    a bag of one model.
    """
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum, serialize_model
    from omegaconf import OmegaConf

    seed_everything()
    model = HTDemucs(
        sources=["drums", "bass", "other", "vocals"],
        audio_channels=2,
        samplerate=44100,
        segment=5,
        channels=16,
        depth=4,
        t_layers=1,
    )
    out.mkdir(parents=True, exist_ok=True)
    signature = hashlib.sha256(DEMUCS_NAME.encode()).hexdigest()[:8]
    save_with_checksum(serialize_model(model, OmegaConf.create({})), out / f"{signature}.th")
    (out / f"{DEMUCS_NAME}.yaml").write_text(f"models: ['{signature}']\n")
    return out


def build_pyannote_diarization(out: Path) -> Path:
    """speaker-diarization-community-1 layout: config.yaml + segmentation/, embedding/, plda/.

    The segmentation model is the real one (pyannote/segmentation, from the whisperx wheel); the
    embedding model is a randomly initialised WeSpeaker ResNet34 saved as pyannote's converter saves it;
    the PLDA is a fixed random rotation (a real PLDA needs labelled speakers). Speech regions are
    therefore real, speaker labels are not.
    """
    import lightning
    import numpy as np
    import torch
    import yaml
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    from annotate.models import bundled_path

    out.mkdir(parents=True, exist_ok=True)
    (out / "segmentation").mkdir(exist_ok=True)
    segmentation = bundled_path("pyannote-segmentation") / "pytorch_model.bin"
    (out / "segmentation" / "pytorch_model.bin").write_bytes(segmentation.read_bytes())

    seed_everything()
    embedding = WeSpeakerResNet34()
    embedding.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
    )
    checkpoint = {"state_dict": embedding.state_dict()}
    embedding.on_save_checkpoint(checkpoint)
    checkpoint["pytorch-lightning_version"] = lightning.__version__
    (out / "embedding").mkdir(exist_ok=True)
    torch.save(checkpoint, out / "embedding" / "pytorch_model.bin")

    write_plda(out / "plda", embedding_dim=256, lda_dim=128, rng=np.random.default_rng(SEED))

    config = {
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "clustering": "VBxClustering",
                "segmentation": "$model/segmentation",
                "segmentation_batch_size": 32,
                "embedding": "$model/embedding",
                "embedding_batch_size": 32,
                "embedding_exclude_overlap": True,
                "plda": "$model/plda",
            },
        },
        "params": {
            "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
            # This segmentation model is multi-label (not powerset), so it takes a threshold.
            "segmentation": {"threshold": 0.5, "min_duration_off": 0.0},
        },
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def write_plda(folder: Path, embedding_dim: int, lda_dim: int, rng) -> None:
    """xvec_transform.npz (centering + LDA) and plda.npz (mu, tr, psi) in VBx's format."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((embedding_dim, embedding_dim)))
    np.savez(
        folder / "xvec_transform.npz",
        mean1=np.zeros(embedding_dim),
        mean2=np.zeros(lda_dim),
        lda=rotation[:, :lda_dim],
    )
    np.savez(
        folder / "plda.npz",
        mu=np.zeros(lda_dim),
        tr=np.eye(lda_dim),
        psi=np.linspace(2.0, 0.1, lda_dim),
    )


MODELS: dict[str, Callable[[Path], Path]] = {
    "qwen3-omni-instruct": build_qwen3_omni,
    "qwen3-omni-captioner": partial(build_qwen3_omni, seed=SEED + 1),
    "qwen3": build_qwen3,
    "demucs": build_demucs,
    "pyannote-diarization": build_pyannote_diarization,
}


def build(out: Path, only: list[str] | None = None) -> dict[str, Path]:
    """Build the named models (all by default) into `out/<name>`; returns their folders."""
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    return {name: MODELS[name](out / name) for name in (only or MODELS)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model folders into")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), help="build only these models")
    args = parser.parse_args()
    for name, folder in build(args.out, args.only).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
