"""The streaming output filter: guardrails on model text as it arrives, holding back as little as possible.

Each new piece is scanned together with a bounded tail of the text already released, so a match that
spans released and new text (a key phrase, then its value; a multi-word topic split between tokens) is
found. Released text can no longer be changed, so for `redact` categories text is only released once it
cannot be the start of an entity still being written: the unfinished word (e-mail, token, key), a
trailing run of digits, capitals and separators (card and phone numbers with an extension to come,
IBANs, a PEM header), judged on the canonical view so invisible or look-alike characters change
nothing; ordinary prose flows word by word. A `stop` category ends the stream as soon as it is seen.
The analysis channel (raw chain of thought) is dropped unless the principal's role may see it, and is
then filtered like the final channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from appliance.policy.canon import View, canonical
from appliance.policy.detectors import Finding
from appliance.policy.grants import effective_grant, rule_for
from appliance.policy.pack import PolicySet
from appliance.policy.redact import Edit, redacted
from appliance.principal import Principal

ANALYSIS = "analysis"
MAX_HOLD = 1024  # a run of non-space text longer than this is released even if unfinished
CONTEXT = 512  # released characters scanned again with each new piece (longer than any phrase or key line)
_WORD_TAIL = re.compile(r"\S*\Z")
_CODE_TAIL = re.compile(r"[A-Z0-9+().\-/ ]{1,48}\Z")
_PARTIAL_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{0,3})?\Z")
_EXTENSION_TAIL = re.compile(r"[A-Z0-9+().\-/ ]*\d[ \t]*(?:e[a-z]{0,8}\.?|x|#)[ \t]*\d{0,6}\Z", re.IGNORECASE)


class Release(NamedTuple):
    """What one chunk is, in the model's text: the channel's raw text up to `end` was released with `edits`
    (offsets in the channel's whole raw text), so a reader can tell which raw characters the chunk shows."""

    channel: str
    end: int
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class FilterOutput:
    """What may be sent now: `(channel, text)` pieces in order (and a `Release` for each), the findings acted
    on, and the stop."""

    chunks: tuple[tuple[str, str], ...] = ()
    findings: tuple[Finding, ...] = ()
    stopped: bool = False
    rule_id: str | None = None
    releases: tuple[Release, ...] = ()

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.chunks)

    def text_of(self, channel: str) -> str:
        return "".join(text for name, text in self.chunks if name == channel)


@dataclass
class _Pending:
    text: str = ""
    offset: int = 0  # characters of this channel already released
    released: str = ""  # the last `CONTEXT` of them, as the model wrote them


@dataclass
class OutputFilter:
    """One per response. `feed` each decoded piece with its harmony channel; `finish` at the end.

    When `stopped` turns true the response must end with finish_reason "content_filter"; `rule_id`
    names the output rule that stopped it. Channels are taken to arrive one after another (harmony's
    order), so a change of channel flushes the previous one.
    """

    policy: PolicySet
    principal: Principal
    reasoning_visible: bool | None = None
    stopped: bool = False
    rule_id: str | None = None
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _channel: str | None = None

    def __post_init__(self) -> None:
        if self.reasoning_visible is None:
            grant = effective_grant(self.policy, self.principal)
            self.reasoning_visible = bool(grant and grant.reasoning_visible)

    def feed(self, channel: str, text: str) -> FilterOutput:
        if self.stopped or (channel == ANALYSIS and not self.reasoning_visible):
            return FilterOutput(stopped=self.stopped, rule_id=self.rule_id)
        out = _Out()
        if self._channel is not None and self._channel != channel:
            self._release(self._channel, True, out)
        self._channel = channel
        if not self.stopped:
            self._pending.setdefault(channel, _Pending()).text += text
            self._release(channel, False, out)
        return out.output(self)

    def finish(self) -> FilterOutput:
        out = _Out()
        if self._channel is not None and not self.stopped:
            self._release(self._channel, True, out)
        return out.output(self)

    def _release(self, channel: str, final: bool, out: _Out) -> None:
        pending = self._pending.setdefault(channel, _Pending())
        if not pending.text:
            return
        base = len(pending.released)
        buf = pending.released + pending.text
        hold = len(buf) if final else max(base, _hold_start(buf))
        acted: list[Finding] = []
        findings = out.findings
        for finding in self.policy.scanner.scan(buf):
            if finding.end <= base:
                continue  # wholly released: judged when it was new
            rule = rule_for(self.policy, "output", self.principal.role, finding.category)
            if rule is None or rule.action == "allow":
                continue
            if rule.action == "stop":
                self.stopped, self.rule_id = True, rule.id
                hold = max(base, min([finding.start] + [f.start for f in acted if f.end > finding.start]))
                acted = [f for f in acted if f.end <= hold]
                findings.append(self._absolute(finding, pending, base))
                break
            # a redacted value that began in released text (held no longer than MAX_HOLD): the rest goes
            acted.append(replace(finding, start=max(base, finding.start)))
        if not final and not self.stopped:
            for finding in sorted(acted, key=lambda f: f.start, reverse=True):
                if finding.start < hold < finding.end or finding.end >= min(hold, len(buf)):
                    hold = max(base, min(hold, finding.start))
        released = [replace(f, start=f.start - base, end=f.end - base) for f in acted if f.end <= hold]
        shown, edits = redacted(buf[base:hold], released)
        findings.extend(self._absolute(f, pending, 0) for f in released)
        pending.released = buf[:hold][-CONTEXT:]
        start = pending.offset
        pending.text, pending.offset = ("" if self.stopped else buf[hold:]), pending.offset + hold - base
        if shown:
            out.chunks.append((channel, shown))
            moved = tuple(Edit(e.start + start, e.end + start, e.replacement) for e in edits)
            out.releases.append(Release(channel, pending.offset, moved))

    @staticmethod
    def _absolute(finding: Finding, pending: _Pending, base: int) -> Finding:
        """`finding` with offsets in the whole channel's text (`base`: where this buffer's new text starts)."""
        shift = pending.offset - base
        return replace(finding, start=max(0, finding.start + shift), end=finding.end + shift)


@dataclass
class _Out:
    """What one `feed` or `finish` releases, gathered across the channels it flushes."""

    chunks: list[tuple[str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)

    def output(self, state: OutputFilter) -> FilterOutput:
        return FilterOutput(
            tuple(self.chunks), tuple(self.findings), state.stopped, state.rule_id, tuple(self.releases)
        )


def _hold_start(buf: str) -> int:
    """Where the text that might still grow into an entity begins, judged on the canonical view (a
    JSON escape still being written is judged as the character it will become)."""
    partial = _PARTIAL_ESCAPE.search(buf, max(0, len(buf) - 6))
    if partial is not None:
        return min(partial.start(), _hold_start(buf[: partial.start()] + "0"))
    view = canonical(buf)
    text = view.text
    word = _WORD_TAIL.search(text)
    start = word.start() if word else len(text)  # `\S*\Z` always matches; the check is for the type
    window = max(0, len(text) - 64)
    for tail in (_CODE_TAIL, _EXTENSION_TAIL):
        m = tail.search(text, window)
        if m is not None:
            start = min(start, m.start())
    return max(view.start(start) if start < len(text) else _end_of_visible(view, buf), len(buf) - MAX_HOLD)


def _end_of_visible(view: View, buf: str) -> int:
    """Original offset just after the last canonical character: trailing invisible characters stay held."""
    return view.end(len(view.text)) if view.text else 0
