"""The streaming output filter: guardrails on model text as it arrives, holding back as little as possible.

Text is released as soon as it cannot be the start of an entity still being written: the unfinished word
(e-mail, token, key) and a trailing run of digits, capitals and separators (card and phone numbers, IBANs,
a PEM header) stay pending; ordinary prose flows word by word. The analysis channel (raw chain of
thought) is dropped unless the principal's role may see it, and is then filtered like the final channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from appliance.policy.detectors import Finding
from appliance.policy.grants import effective_grant, rule_for
from appliance.policy.pack import PolicySet
from appliance.policy.redact import redact
from appliance.principal import Principal

ANALYSIS = "analysis"
MAX_HOLD = 1024  # a run of non-space text longer than this is released even if unfinished
_WORD_TAIL = re.compile(r"\S*\Z")
_CODE_TAIL = re.compile(r"[A-Z0-9+().\-/ ]{1,48}\Z")


@dataclass(frozen=True)
class FilterOutput:
    """What may be sent now: `(channel, text)` pieces in order, the findings acted on, and the stop."""

    chunks: tuple[tuple[str, str], ...] = ()
    findings: tuple[Finding, ...] = ()
    stopped: bool = False
    rule_id: str | None = None

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.chunks)

    def text_of(self, channel: str) -> str:
        return "".join(text for name, text in self.chunks if name == channel)


@dataclass
class _Pending:
    text: str = ""
    offset: int = 0  # characters of this channel already released


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
        chunks: list[tuple[str, str]] = []
        findings: list[Finding] = []
        if self._channel is not None and self._channel != channel:
            self._release(self._channel, True, chunks, findings)
        self._channel = channel
        if not self.stopped:
            self._pending.setdefault(channel, _Pending()).text += text
            self._release(channel, False, chunks, findings)
        return FilterOutput(tuple(chunks), tuple(findings), self.stopped, self.rule_id)

    def finish(self) -> FilterOutput:
        chunks: list[tuple[str, str]] = []
        findings: list[Finding] = []
        if self._channel is not None and not self.stopped:
            self._release(self._channel, True, chunks, findings)
        return FilterOutput(tuple(chunks), tuple(findings), self.stopped, self.rule_id)

    def _release(self, channel: str, final: bool, chunks: list, findings: list) -> None:
        pending = self._pending.setdefault(channel, _Pending())
        buf = pending.text
        if not buf:
            return
        hold = len(buf) if final else _hold_start(buf)
        acted: list[Finding] = []
        for finding in self.policy.scanner.scan(buf):
            rule = rule_for(self.policy, "output", self.principal.role, finding.category)
            if rule is None or rule.action == "allow":
                continue
            if rule.action == "stop":
                self.stopped, self.rule_id = True, rule.id
                hold = min([finding.start] + [f.start for f in acted if f.end > finding.start])
                acted = [f for f in acted if f.end <= hold]
                findings.append(replace(finding, start=finding.start + pending.offset,
                                        end=finding.end + pending.offset))
                break
            acted.append(finding)
        if not final and not self.stopped:
            for finding in sorted(acted, key=lambda f: f.start, reverse=True):
                if finding.start < hold < finding.end or finding.end >= len(buf):
                    hold = min(hold, finding.start)
        released = [f for f in acted if f.end <= hold]
        out = redact(buf[:hold], released)
        findings.extend(replace(f, start=f.start + pending.offset, end=f.end + pending.offset) for f in released)
        pending.text, pending.offset = ("" if self.stopped else buf[hold:]), pending.offset + hold
        if out:
            chunks.append((channel, out))


def _hold_start(buf: str) -> int:
    """Where the text that might still grow into an entity begins."""
    start = _WORD_TAIL.search(buf).start()
    code = _CODE_TAIL.search(buf, max(0, len(buf) - 48))
    if code is not None:
        start = min(start, code.start())
    return max(start, len(buf) - MAX_HOLD)
