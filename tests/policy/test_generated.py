"""Recall and precision on the Faker-generated corpus and on the evasion corpus (issue 12, goals)."""

from __future__ import annotations

from collections import Counter

from appliance.policy.detectors import Scanner
from tests.policy import generated

SCANNER = Scanner()


def _overlap(a, b) -> bool:
    return a.category == b.category and a.start < b.end and b.start < a.end


def test_generated_corpus_recall_and_precision() -> None:
    gold, hit, fired, right = Counter(), Counter(), Counter(), Counter()
    for line in generated.lines():
        findings = [f for f in SCANNER.scan(line.text) if f.category in generated.CATEGORIES]
        for span in line.spans:
            gold[span.category] += 1
            hit[span.category] += any(_overlap(f, span) for f in findings)
        for f in findings:
            fired[f.category] += 1
            right[f.category] += any(_overlap(f, span) for span in line.spans)
    for category in generated.CATEGORIES:
        assert gold[category] >= 10, category
        recall, precision = hit[category] / gold[category], right[category] / max(1, fired[category])
        assert recall >= 0.99 and precision >= 0.98, (category, recall, precision)


def test_evasion_corpus_recall() -> None:
    total, hit = Counter(), Counter()
    for form, line in generated.evasion_lines():
        span = line.spans[0]
        total[form] += 1
        hit[form] += any(_overlap(f, span) for f in SCANNER.scan(line.text))
    assert set(total) == set(generated.OBFUSCATIONS)
    for form in total:
        assert hit[form] / total[form] >= 0.99, (form, hit[form], total[form])


def test_obfuscated_values_with_invisible_characters_are_hidden_text() -> None:
    for form, line in generated.evasion_lines():
        if form in ("zero-width space", "soft hyphen", "variation selector", "JSON-escaped zero-width space"):
            span = line.spans[0]
            found = SCANNER.scan(line.text)
            if any(_overlap(f, span) for f in found):
                assert any(
                    f.category == "injection.hidden_text" and f.start < span.end and span.start < f.end for f in found
                ), (form, line.text)
