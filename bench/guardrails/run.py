"""Guardrail quality and speed: our detectors beside presidio-analyzer's pattern recognizers, same text.

The corpora: the hand-written one (tests/policy/corpus.py, written by the detectors' authors), the
Faker-generated one in seven locales with look-alikes (tests/policy/generated.py), the evasion corpus
(every planted value in every obfuscated form), the look-alike-letter corpus (values disguised with
letters ICU's confusables data gives), the separator corpus (identifiers grouped with every dash and
space Unicode has, dots, slashes or none), libphonenumber's example numbers in each of its formats, and
non-Latin prose (Faker ru_RU, el_GR, uk_UA, bg_BG) where nothing may fire. Presidio runs with a blank spaCy
pipeline (no model download) and its predefined recognizers, on a prefix of each corpus (it is slow).
Then speed on one core (CPU seconds): long documents (100 KB: the dense labelled corpus, documents
with an entity every ~2 KB, plain prose, the generated non-ASCII lines, Cyrillic and Greek prose) and
~200-byte prompts, and the decision latency of a 2 KB prompt against the default pack. The machine's
load average is printed with the speeds: on a shared machine they are lower bounds. Output also goes to bench/results/guardrails.txt.

    .venv/bin/pip install '.[bench,dev]'; .venv/bin/python bench/guardrails/run.py [--mb 4]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.policy import Message, PolicyEngine, PolicyRequest, PolicySet  # noqa: E402
from appliance.policy.detectors import Scanner  # noqa: E402
from appliance.principal import Principal  # noqa: E402
from tests.policy import corpus, generated  # noqa: E402

PRESIDIO_TO_OURS = {
    "EMAIL_ADDRESS": "pii.email",
    "PHONE_NUMBER": "pii.phone",
    "CREDIT_CARD": "pii.payment_card",
    "IBAN_CODE": "pii.iban",
    "US_SSN": "pii.us_ssn",
    "IP_ADDRESS": "pii.ip_address",
    "UK_NINO": "pii.uk_nino",
    "IT_FISCAL_CODE": "pii.it_fiscal_code",
    "ES_NIF": "pii.es_dni",
    "ES_NIE": "pii.es_dni",
}
Scan = Callable[[str], Iterable[tuple[str, int, int]]]
Labelled = list[tuple[str, list[corpus.Span]]]


def presidio_scan() -> Scan:
    import logging

    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # no network here: its bundled suffix list is used
    folder = Path(tempfile.mkdtemp()) / "blank_en"
    spacy.blank("en").to_disk(folder)
    nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(folder)}])
    nlp.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(nlp_engine=nlp)
    analyzer = AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])
    analyzer.analyze("warm up jane@example.org", language="en")
    return lambda text: (
        (PRESIDIO_TO_OURS[r.entity_type], r.start, r.end)
        for r in analyzer.analyze(text, language="en")
        if r.entity_type in PRESIDIO_TO_OURS
    )


def score(docs: Labelled, scan: Scan, categories: tuple[str, ...]) -> dict[str, tuple[float, float, int]]:
    """Per category: recall, precision, gold count. A finding counts when it overlaps a gold span of its category."""
    gold, hit, fired, right = Counter(), Counter(), Counter(), Counter()
    for text, spans in docs:
        found = [f for f in scan(text) if f[0] in categories]
        for s in spans:
            gold[s.category] += 1
            hit[s.category] += any(c == s.category and a < s.end and s.start < b for c, a, b in found)
        for c, a, b in found:
            fired[c] += 1
            right[c] += any(c == s.category and a < s.end and s.start < b for s in spans)
    return {
        c: (hit[c] / gold[c] if gold[c] else 1.0, right[c] / fired[c] if fired[c] else 1.0, gold[c]) for c in categories
    }


def table(title: str, ours: dict, theirs: dict, note: str) -> None:
    print(f"\n{title} ({note})")
    print(
        f"  {'category':20s} {'n':>6s} {'ours recall':>11s} {'precision':>9s} | {'presidio recall':>15s} {'precision':>9s}"
    )
    for cat, (r, p, n) in ours.items():
        if n:
            pr, pp, _ = theirs.get(cat, (0.0, 1.0, 0))
            shown = f"{pr:15.4f} {pp:9.4f}" if cat in PRESIDIO_TO_OURS.values() else f"{'(no recognizer)':>25s}"
            print(f"  {cat:20s} {n:6d} {r:11.4f} {p:9.4f} | {shown}")


def per_form(lines: list[tuple[str, generated.Line]], scan: Scan) -> dict[str, float]:
    total, hit = Counter(), Counter()
    for form, line in lines:
        s = line.spans[0]
        total[form] += 1
        hit[form] += any(c == s.category and a < s.end and s.start < b for c, a, b in scan(line.text))
    return {form: hit[form] / total[form] for form in total}


def mb_per_s(docs: list[str], scan: Callable[[str], object]) -> float:
    scan(docs[0])
    start = time.process_time()
    for doc in docs:
        scan(doc)
    return sum(map(len, docs)) / (time.process_time() - start) / 1e6


def speed(args: argparse.Namespace, ours: Scanner, p_scan: Scan) -> None:
    size = int(args.mb * 1e6)
    dense, _ = corpus.generate(size, seed=2026, secrets=False)
    prose = corpus.prose(size)
    r = random.Random(4)
    sparse = "".join(
        prose[i : i + 2000] + corpus.PII_MAKERS[r.choice(sorted(corpus.PII_MAKERS))](r) + " "
        for i in range(0, size, 2000)
    )
    foreign = "\n".join(line.text for line in generated.lines()) * 2

    def chunks(text: str, n: int) -> list[str]:
        return [text[i : i + n] for i in range(0, len(text), n)]

    cyrillic = "\n".join(line for _, line in generated.prose_lines())
    scan = ours.scan
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        "\nspeed, one core (CPU seconds; goals: >= 50 MB/s long documents with an entity every ~2 KB, >= 20 MB/s"
        f" dense and non-ASCII text; load average {load} on {os.cpu_count()} cores)"
    )
    rows = [
        ("long: plain prose, 100 KB documents", chunks(prose, 100_000)),
        ("long: an entity every ~2 KB, 100 KB documents", chunks(sparse, 100_000)),
        ("long: dense labelled corpus (entity every ~240 chars)", chunks(dense, 100_000)),
        ("long: generated lines, 7 locales, non-ASCII", chunks(foreign, 100_000)),
        ("long: Cyrillic and Greek prose (4 locales)", chunks(cyrillic, 100_000)),
        ("short: ~200-byte prompts of plain prose", chunks(prose[:2_000_000], 200)),
        ("short: ~200-byte prompts, an entity every ~2 KB", chunks(sparse[:2_000_000], 200)),
        ("short: ~200-byte prompts of the dense corpus", chunks(dense[:1_000_000], 200)),
    ]
    p_docs = {
        rows[1][0]: chunks(sparse[:200_000], 100_000),
        rows[4][0]: chunks(cyrillic[:100_000], 50_000),
        rows[5][0]: chunks(prose[:100_000], 200),
    }
    for name, docs in rows:
        line = f"  {name:55s} ours {mb_per_s(docs, scan):9.2f} MB/s"
        if name in p_docs:
            line += f"   presidio {mb_per_s(p_docs[name], lambda t: list(p_scan(t))):7.3f} MB/s"
        print(line)


def latency() -> None:
    """evaluate_input on a typical 2 KB prompt (one e-mail to redact) with the default pack: wall time, and
    the thread's CPU time per decision (what the decision itself costs; on a shared machine the wall
    time's tail is mostly waiting for a core)."""
    engine = PolicyEngine(PolicySet.load(ROOT / "policies"))
    prose, _ = corpus.generate(4000, seed=5, secrets=False)
    prompt = ("You are a helpful assistant for the operations team.", prose[:1900] + " Reply to ops@example.com.")
    request = PolicyRequest("gpt-oss-demo", [Message("system", prompt[0]), Message("user", prompt[1])], 512)
    principal = Principal(key_id="k1", name="alice", role="user")
    wall, cpu = [], []
    for _ in range(3000):
        t0, c0 = time.perf_counter(), time.thread_time()
        engine.evaluate_input(request, principal)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - t0)

    def p(samples: list[float], q: float) -> float:
        return sorted(samples)[int(len(samples) * q)] * 1e6

    print(
        f"\ndecision latency, 2 KB prompt (goal p99 < 1 ms): wall p50 {p(wall, 0.5):.0f} us, p99 {p(wall, 0.99):.0f} us"
        f" (mean {statistics.fmean(wall) * 1e6:.0f} us); CPU p50 {p(cpu, 0.5):.0f} us, p99 {p(cpu, 0.99):.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=4.0, help="size of each long-document corpus")
    parser.add_argument("--presidio-lines", type=int, default=600, help="Presidio is slow: lines it scans per corpus")
    args = parser.parse_args()
    ours = Scanner()
    ours_scan: Scan = lambda t: ((f.category, f.start, f.end) for f in ours.scan(t))  # noqa: E731
    p_scan = presidio_scan()

    hand_text, hand_spans = corpus.generate(1_000_000, seed=2026, secrets=False)
    hand: Labelled = []
    for line_start, line in _lines(hand_text):
        spans = [
            corpus.Span(s.category, s.start - line_start, s.end - line_start)
            for s in hand_spans
            if line_start <= s.start < line_start + len(line)
        ]
        hand.append((line, spans))
    gen: Labelled = [(line.text, list(line.spans)) for line in generated.lines()]
    evasion = list(generated.evasion_lines())
    cats = generated.CATEGORIES
    n = args.presidio_lines

    out = io.StringIO()
    with redirect_stdout(out):
        print(
            "guardrails bench: ours vs presidio-analyzer 2.2.366 (pattern recognizers, blank spaCy); "
            "recall/precision per category, a finding counts when it overlaps a planted value of its category"
        )
        table(
            "hand-written corpus (tests/policy/corpus.py)",
            score(hand, ours_scan, corpus.STRUCTURED),
            score(hand[: n * 4], p_scan, corpus.STRUCTURED),
            f"{len(hand)} lines; presidio on the first {n * 4}",
        )
        table(
            "generated corpus (Faker, 7 locales, look-alikes)",
            score(gen, ours_scan, cats),
            score(gen[:n], p_scan, cats),
            f"{len(gen)} lines; presidio on the first {n}",
        )
        stride = max(1, len(evasion) // n)
        ev = [(line.text, list(line.spans)) for _, line in evasion]
        ev_cats = tuple(sorted({s.category for _, spans in ev for s in spans}))
        table(
            "evasion corpus (every planted value in every obfuscated form)",
            score(ev, ours_scan, ev_cats),
            score(ev[::stride], p_scan, ev_cats),
            f"{len(ev)} lines; presidio on every {stride}th",
        )
        ours_forms, p_forms = per_form(evasion, ours_scan), per_form(evasion[::stride], p_scan)
        print(f"\n  {'obfuscation':32s} {'ours recall':>11s} | {'presidio recall':>15s}")
        for form, recall in ours_forms.items():
            print(f"  {form:32s} {recall:11.4f} | {p_forms.get(form, float('nan')):15.4f}")
        for title, lines in (
            (
                "look-alike letter corpus (ICU confusables in values, keys, labels, phrases)",
                generated.lookalike_lines(),
            ),
            ("separator corpus (every dash and space, dots, slashes, none)", generated.separator_lines()),
            (
                "libphonenumber's example numbers, every region, E.164/international/RFC 3966/national",
                generated.phone_lines(),
            ),
        ):
            docs = [(line.text, list(line.spans)) for _, line in lines]
            cats = tuple(sorted({s.category for _, spans in docs for s in spans}))
            stride = max(1, len(docs) // n)
            table(
                title,
                score(docs, ours_scan, cats),
                score(docs[::stride], p_scan, cats),
                f"{len(docs)} lines; presidio on every {stride}th",
            )
        prose_lines = generated.prose_lines()
        print(f"\nnon-Latin prose: lines with any finding (goal <= 0.1%), {len(prose_lines)} lines")
        for locale in generated.PROSE_LOCALES:
            mine = [line for loc, line in prose_lines if loc == locale]
            ours_fp = sum(1 for line in mine if ours.scan(line)) / len(mine)
            theirs = mine[: n // 2]
            p_fp = sum(1 for line in theirs if list(p_scan(line))) / len(theirs)
            print(f"  {locale}  ours {ours_fp:7.2%} of {len(mine)} | presidio {p_fp:7.2%} of {len(theirs)}")
        speed(args, ours, p_scan)
        latency()
    sys.stdout.write(out.getvalue())
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "guardrails.txt").write_text(out.getvalue())


def _lines(text: str) -> Iterable[tuple[int, str]]:
    """The hand-written corpus cut into sentences (no planted value spans a cut): (start, sentence)."""
    pos = 0
    for sentence in text.split(". "):
        yield pos, sentence + ". "
        pos += len(sentence) + 2


if __name__ == "__main__":
    main()
