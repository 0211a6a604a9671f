"""Harmony-aware output constraints, compiled by llguidance over the o200k vocabulary.

A constrained answer is a Lark grammar over the tokens the model writes after `<|start|>assistant`: any
number of free analysis messages (the reasoning channel is never constrained), then the ending the request
allows: a final message whose content matches the answer format (a JSON schema, or free text), and/or a
function call in the commentary channel addressed to one of the allowed tools, its arguments valid for that
tool's schema. Harmony's special tokens are named by id (`<[200005]>`), since their text would match
ordinary bytes. Both header orders harmony produces for a call are accepted (`to=` before or after the
channel).

llguidance builds its tokenizer from the shipped vocabulary (no download, once per process, ~3 s) and
compiles a grammar in about a millisecond; matchers are cached by the grammar's SHA-256 and each
constrained sequence gets a cheap copy. Compiling and computing masks release the GIL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import llguidance
import numpy as np

from appliance.engine.types import EngineError
from appliance.vocabulary import O200K_PATTERN, packaged_harmony, vocabulary_bytes

VOCAB = 201_088  # the gpt-oss LM head's width; ids at and beyond it are never sampled
MAX_SCHEMA_BYTES = 64 * 1024  # a schema is a prompt too: bigger ones are refused before compiling
MAX_DEPTH = 32  # nesting of a schema's JSON
_CACHE_SIZE = 256
# The JSON the constraint admits: no free whitespace, so a model cannot pad an answer until it runs out.
_JSON_OPTIONS = {"whitespace_flexible": False}

Calls = Literal["auto", "required", "none"]


class GrammarError(EngineError):
    """A schema or grammar llguidance cannot compile; `param` names the request field it came from."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _special(name: str) -> int:
    return packaged_harmony().encode(name, allowed_special="all")[0]


_BUILD = threading.Lock()


def tokenizer() -> llguidance.LLTokenizer:
    """llguidance's view of o200k_harmony, built from the vocabulary shipped in the bpe-openai wheel (once:
    the first requests that need it wait for one build instead of each starting their own)."""
    with _BUILD:
        return _tokenizer()


@lru_cache(maxsize=1)
def _tokenizer() -> llguidance.LLTokenizer:
    ranks = {
        base64.b64decode(tok): int(rank)
        for tok, rank in (line.split() for line in vocabulary_bytes().splitlines() if line)
    }
    enc = packaged_harmony()
    specials = {name: i for name in enc.special_tokens_set if (i := enc.encode(name, allowed_special="all")[0]) < VOCAB}
    return llguidance.LLTokenizer.from_tiktoken(  # type: ignore[attr-defined]  # missing from its stubs
        encoder=ranks, special_tokens=specials, pattern=O200K_PATTERN, eos_token=_special("<|return|>"), n_vocab=VOCAB
    )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def schema_json(schema: dict[str, Any], param: str) -> str:
    """The schema as compact JSON for `%json`, with the appliance's JSON options; refused if too big."""
    if not isinstance(schema, dict):
        raise GrammarError(f"{param} must be a JSON schema object", param)
    text = json.dumps(
        {**schema, "x-guidance": _JSON_OPTIONS}, separators=(",", ":"), ensure_ascii=False, sort_keys=True
    )
    if len(text.encode()) > MAX_SCHEMA_BYTES or _depth(schema) > MAX_DEPTH:
        raise GrammarError(
            f"{param} is larger than the appliance compiles ({MAX_SCHEMA_BYTES // 1024} KiB, {MAX_DEPTH} levels)", param
        )
    return text


@dataclass(frozen=True)
class Constraint:
    """What a constrained answer may be: `answer` is the final message's JSON schema (None: free text),
    `tools` maps each callable tool's name to its parameters schema, `calls` says whether a call is
    allowed (`auto`), forced (`required`) or forbidden (`none`)."""

    answer: dict[str, Any] | None
    tools: dict[str, dict[str, Any]]
    calls: Calls
    answer_param: str = "response_format"
    tool_params: tuple[str, ...] = ()  # the request field of each tool's schema, in `tools` order

    def grammar(self) -> str:
        """The Lark grammar; every schema checked on its own first, so an error names its field."""
        c, m, end, start = (f"<[{_special(n)}]>" for n in ("<|channel|>", "<|message|>", "<|end|>", "<|start|>"))
        ret, constrain, call = (f"<[{_special(n)}]>" for n in ("<|return|>", "<|constrain|>", "<|call|>"))
        endings = []
        rules = [
            "start: analysis* ending",
            f'analysis: {c} "analysis" {m} TEXT {end} {start} "assistant"',
            "TEXT: /(?s:.*)/",
        ]
        if self.calls != "required":
            endings.append("final")
            rules.append(f'final: {c} "final" {m} answer {ret}')
            if self.answer is None:
                rules.append("answer: TEXT")
            else:
                rules.append(f"answer: %json {checked(schema_json(self.answer, self.answer_param), self.answer_param)}")
        if self.calls != "none" and self.tools:
            params = self.tool_params or tuple(f"tools[{i}]" for i in range(len(self.tools)))
            for i, ((name, schema), param) in enumerate(zip(self.tools.items(), params)):
                endings.append(f"call_{i}")
                head = f'(" to=functions.{name}" {c} "commentary" | {c} "commentary to=functions.{name}")'
                rules.append(f'call_{i}: {head} " " {constrain} "json" {m} args_{i} {call}')
                rules.append(f"args_{i}: %json {checked(schema_json(schema or {'type': 'object'}, param), param)}")
        if not endings:
            raise GrammarError("tool_choice requires a call but no tool is given", "tool_choice")
        rules.insert(1, "ending: " + " | ".join(endings))
        return "\n".join(rules)

    def sha256(self) -> str:
        return hashlib.sha256(self.grammar().encode()).hexdigest()


def checked(schema: str, param: str) -> str:
    """`schema` (JSON text) if llguidance compiles it, else a GrammarError naming `param` and the reason."""
    error = _compiled(llguidance.LLMatcher.grammar_from_json_schema(schema), "schema").get_error()
    if error:
        raise GrammarError(f"{param}: the schema cannot be enforced: {' '.join(error.split())[:300]}", param)
    return schema


_LOCK = threading.Lock()
_MATCHERS: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()


def _compiled(grammar: str, kind: str) -> llguidance.LLMatcher:
    """A compiled matcher for `grammar`, from the cache (by SHA-256) or compiled now; never mutated."""
    key = hashlib.sha256(f"{kind}\0{grammar}".encode()).hexdigest()
    with _LOCK:
        if (hit := _MATCHERS.get(key)) is not None:
            _MATCHERS.move_to_end(key)
            return hit
    matcher = llguidance.LLMatcher(tokenizer(), grammar, log_level=0)
    with _LOCK:
        _MATCHERS[key] = matcher
        while len(_MATCHERS) > _CACHE_SIZE:
            _MATCHERS.popitem(last=False)
    return matcher


def compile_grammar(grammar: str) -> llguidance.LLMatcher:
    """A fresh matcher for one sequence (a copy of the cached one); GrammarError if it cannot compile."""
    proto = _compiled(grammar, "lark")
    if proto.is_error():
        raise GrammarError(f"the output constraint cannot be compiled: {' '.join(proto.get_error().split())[:300]}")
    return proto.deep_copy()


@dataclass(frozen=True)
class TokenMask:
    """The tokens a row may write next, as whichever list is short: the allowed ids (inside JSON, a few
    hundred at most) or the forbidden ones (in free text, only the special tokens). Applying either costs
    what the list costs, not a pass over all 201,088 logits."""

    allowed: np.ndarray | None = None
    forbidden: np.ndarray | None = None

    def permits(self, token: int) -> bool:
        if self.allowed is not None:
            return bool(np.isin(token, self.allowed))
        return self.forbidden is None or not np.isin(token, self.forbidden)


def _ids(words: np.ndarray) -> np.ndarray:
    """The ids of the set bits of a little-endian bitmask of uint32 words, below VOCAB."""
    nonzero = np.flatnonzero(words)
    bits = np.unpackbits(words[nonzero].view(np.uint8), bitorder="little").reshape(-1, 32).astype(bool)
    ids = (nonzero[:, None] * 32 + np.arange(32))[bits]
    return ids[ids < VOCAB]


class Guide:
    """One sequence's matcher: the mask of tokens it may write next, and the tokens it wrote."""

    def __init__(self, grammar: str) -> None:
        self.matcher = compile_grammar(grammar)

    def mask(self) -> TokenMask:
        """The next token's mask (llguidance computes it with the GIL released)."""
        words = np.frombuffer(self.matcher.compute_bitmask(), np.uint32)
        if np.count_nonzero(words) <= len(words) // 2:
            allowed = _ids(words)
            if not len(allowed):
                raise EngineError(f"the output constraint allows no token: {self.matcher.get_error()[:200]}")
            return TokenMask(allowed=allowed)
        return TokenMask(forbidden=_ids(~words))

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise EngineError(f"the output constraint refused token {token}: {self.matcher.get_error()[:200]}")
