"""Guardrail scan speed and quality: our detectors vs presidio-analyzer's pattern recognizers, same text.

Presidio runs with a blank spaCy pipeline (no model download) and only its predefined recognizers. Both
scan the same ~10 MB labelled corpus (tests/policy/corpus.py) in 100 KB documents on one core; the
script prints MB/s, recall and precision per structured category, the speed ratio, and the decision
latency of a typical 2 KB prompt. Output also goes to bench/results/guardrails.txt.

    .venv/bin/pip install -e '.[bench]'; .venv/bin/python bench/guardrails/run.py [--mb 10]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.policy import Message, PolicyEngine, PolicyRequest, PolicySet, Principal  # noqa: E402
from appliance.policy.detectors import Scanner  # noqa: E402
from tests.policy import corpus  # noqa: E402

PRESIDIO_TO_OURS = {"EMAIL_ADDRESS": "pii.email", "PHONE_NUMBER": "pii.phone", "CREDIT_CARD": "pii.payment_card",
                    "IBAN_CODE": "pii.iban", "US_SSN": "pii.us_ssn", "IP_ADDRESS": "pii.ip_address"}
CHUNK = 100_000


def presidio_analyzer():
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    folder = Path(tempfile.mkdtemp()) / "blank_en"
    spacy.blank("en").to_disk(folder)
    nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(folder)}])
    nlp.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(nlp_engine=nlp)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def timed_scan(text: str, scan) -> tuple[list[tuple[str, int, int]], float]:
    found: list[tuple[str, int, int]] = []
    start = time.process_time()
    for offset in range(0, len(text), CHUNK):
        found.extend((c, s + offset, e + offset) for c, s, e in scan(text[offset:offset + CHUNK]))
    return found, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--presidio-mb", type=float, default=1.0, help="Presidio is slow: it scans this prefix")
    args = parser.parse_args()
    text, spans = corpus.generate(int(args.mb * 1e6), seed=2026, secrets=False)
    # cut on a sentence boundary so no entity is split between chunks
    text = text.replace(". ", ".\n")
    ours = Scanner()
    chunked = lambda t: ((f.category, f.start, f.end) for f in ours.scan(t))  # noqa: E731
    found, cpu = timed_scan(text, chunked)
    ours_mbs = len(text) / cpu / 1e6
    plain = corpus.prose(len(text) // 5)
    plain_mbs = len(plain) / timed_scan(plain, chunked)[1] / 1e6
    p_len = int(args.presidio_mb * 1e6)
    p_len = text.rfind("\n", 0, p_len) + 1
    p_spans = [s for s in spans if s.end <= p_len]
    analyzer = presidio_analyzer()
    analyzer.analyze(text[:1000], language="en")  # warm-up (loads recognizers)
    p_scan = lambda t: ((PRESIDIO_TO_OURS[r.entity_type], r.start, r.end)  # noqa: E731
                        for r in analyzer.analyze(t, language="en") if r.entity_type in PRESIDIO_TO_OURS)
    p_found, p_cpu = timed_scan(text[:p_len], p_scan)
    p_mbs = p_len / p_cpu / 1e6

    out = io.StringIO()
    with redirect_stdout(out):
        print(f"guardrails bench: ours on {len(text) / 1e6:.1f} MB, presidio-analyzer 2.2.366 (pattern recognizers, "
              f"blank spaCy) on the first {p_len / 1e6:.1f} MB; CPU seconds of one core")
        print(f"  ours     {ours_mbs:8.2f} MB/s per core (one planted entity per {len(text) // len(spans)} characters)")
        print(f"  ours     {plain_mbs:8.2f} MB/s per core on plain prose ({len(plain) / 1e6:.1f} MB, no entities)")
        print(f"  presidio {p_mbs:8.3f} MB/s per core")
        print(f"  speed ratio ours/presidio: {ours_mbs / p_mbs:.0f}x")
        ours_scores = corpus.score(spans, found, corpus.STRUCTURED)
        ours_prefix = corpus.score(p_spans, [f for f in found if f[2] <= p_len], corpus.STRUCTURED)
        p_scores = corpus.score(p_spans, p_found, corpus.STRUCTURED)
        print(f"  {'category':18s} {'ours recall':>11s} {'precision':>9s} | {'same prefix':>11s} {'precision':>9s}"
              f" | {'presidio recall':>15s} {'precision':>9s}   (n={len(p_spans)} on the prefix)")
        for cat in corpus.STRUCTURED:
            (r, p, _), (rp, pp, _), (qr, qp, _) = ours_scores[cat], ours_prefix[cat], p_scores[cat]
            print(f"  {cat:18s} {r:11.4f} {p:9.4f} | {rp:11.4f} {pp:9.4f} | {qr:15.4f} {qp:9.4f}")
        latency()
    sys.stdout.write(out.getvalue())
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "guardrails.txt").write_text(out.getvalue())


def latency() -> None:
    """evaluate_input on a typical 2 KB prompt (one e-mail to redact) with the default pack."""
    engine = PolicyEngine(PolicySet.load(ROOT / "policies"))
    prose, _ = corpus.generate(4000, seed=5, secrets=False)
    prompt = ("You are a helpful assistant for the operations team.", prose[:1900] + " Reply to ops@example.com.")
    request = PolicyRequest("gpt-oss-demo", [Message("system", prompt[0]), Message("user", prompt[1])], 512)
    principal = Principal(key_id="k1", name="alice", role="user")
    samples = []
    for _ in range(3000):
        t0 = time.perf_counter()
        engine.evaluate_input(request, principal)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"  decision latency, 2 KB prompt: p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us "
          f"(mean {statistics.fmean(samples) * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
