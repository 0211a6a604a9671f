"""Hugging Face tokenizer files for o200k_harmony, built offline from the vocabulary in bpe-openai.

Published gpt-oss checkpoints carry a `tokenizer.json`; the onnxruntime-genai builder loads it through
AutoTokenizer and copies it into its output. transformers' TikTokenConverter needs `tiktoken` (absent
here) and is slow, so the BPE merges are recovered directly: a token of rank r merges from the split
whose two halves are both tokens, lowest ranks first, exactly what that converter does.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from appliance.vocabulary import O200K_PATTERN, vocabulary_bytes

# The harmony special tokens with their ids (o200k_harmony); every other id in 199998..201087 is reserved.
HARMONY_SPECIALS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}
VOCAB_SIZE = 201088


def special_tokens() -> dict[str, int]:
    """All 1,090 special tokens of o200k_harmony that fall inside the model's 201,088 ids."""
    by_id = {i: f"<|reserved_{i}|>" for i in range(199998, VOCAB_SIZE)}
    by_id.update({i: name for name, i in HARMONY_SPECIALS.items()})
    return {name: i for i, name in by_id.items()}


def _byte_level_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by ByteLevel BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _ranks() -> dict[bytes, int]:
    ranks = {}
    for line in vocabulary_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


def tokenizer_json() -> dict:
    """The `tokenizer.json` document (ids identical to harmony's tiktoken encoding)."""
    ranks = _ranks()
    alphabet = _byte_level_alphabet()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    merges = []
    for token, rank in ranks.items():
        splits = [
            (ranks[token[:i]], ranks[token[i:]], i)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        merges.extend((rank, left, right, token, i) for left, right, i in sorted(splits))
    merges.sort(key=lambda m: m[0])
    added = [
        {
            "id": i,
            "content": name,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for name, i in sorted(special_tokens().items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": O200K_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {text(t): r for t, r in ranks.items()},
            "merges": [[text(t[:i]), text(t[i:])] for _, _, _, t, i in merges],
        },
    }


def tokenizer_config() -> dict:
    """`tokenizer_config.json` as the published checkpoints have it (the fields loaders read)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 131072,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }


def write_tokenizer_files(folder: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `folder`."""
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))
    specials = {k: tokenizer_config()[k] for k in ("bos_token", "eos_token", "pad_token")}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
