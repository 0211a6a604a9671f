"""The streaming filter remembers released text (issue 12, point 4), proved on random splits.

For every line of the generated and evasion corpora, and for hand-written secrets split anywhere, the
text a client receives piece by piece equals what the filter gives for the whole text at once.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.policy import OutputFilter, PolicySet
from appliance.principal import Principal
from tests.policy import corpus, generated

PACK = Path(__file__).resolve().parents[2] / "policies"
USER = Principal(key_id="k-user", name="alice", role="user")
POLICY = PolicySet.load(PACK)
LINES = (
    [line.text for line in generated.lines()]
    + [line.text for _, line in generated.evasion_lines()[::5]]
    + [line.text for _, line in generated.lookalike_lines()[::5]]
    + [line.text for _, line in generated.separator_lines()[::5]]
)


def streamed(text: str, cuts: list[int]) -> tuple[str, bool]:
    stream = OutputFilter(POLICY, USER)
    bounds = [0, *sorted(set(cuts)), len(text)]
    out = [stream.feed("final", text[a:b]).text for a, b in itertools.pairwise(bounds) if b > a]
    if not stream.stopped:
        out.append(stream.finish().text)
    return "".join(out), stream.stopped


def whole(text: str) -> tuple[str, bool]:
    return streamed(text, [])


def test_a_key_phrase_released_before_its_value_still_stops() -> None:
    stream = OutputFilter(POLICY, USER)
    out = "".join(stream.feed("final", p).text for p in ["Use", " password", ":", " hu", "nter2hunter2"])
    assert stream.stopped and stream.rule_id == "output.secrets"
    assert "hunter2" not in out


def test_invisible_characters_asked_of_the_model_do_not_evade_output_redaction() -> None:
    pieces = ["Her number is 536", "\u200b-22-", "\u200b8726 and ", "mail jane\u200b", "@example.org."]
    out, stopped = streamed("".join(pieces), [17, 23, 33, 46])
    assert not stopped and "8726" not in out and "example.org" not in out


def test_every_corpus_line_split_at_random_agrees_with_the_whole() -> None:
    failures = []
    for index, text in enumerate(LINES):
        r = random.Random(index)
        expected = whole(text)
        splits = [r.sample(range(1, len(text)), min(len(text) - 1, r.randint(1, 12)))]
        if index % 5 == 0:
            splits.append(list(range(1, len(text))))  # one character at a time
        failures += [(text, sorted(cuts)) for cuts in splits if streamed(text, cuts) != expected]
    assert not failures, failures[:3]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_splits_agree_property(data: st.DataObject) -> None:
    r = random.Random(data.draw(st.integers(0, 10**6)))
    category, maker = data.draw(st.sampled_from(sorted({**corpus.PII_MAKERS, **corpus.SECRET_MAKERS}.items())))
    text = data.draw(st.sampled_from(LINES[:200])) + " then " + maker(r) + data.draw(st.sampled_from([".", " ok", ""]))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=20))
    assert streamed(text, cuts) == whole(text), category
