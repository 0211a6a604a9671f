"""Loading packs: revision, one-line errors with file:line, atomic reload, signatures and rollback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from appliance.policy import PolicyEngine, PolicyError, PolicySet
from appliance.signing import keys, oms
from tests.conftest import one_line_error, run_cli

PACK = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    return Path(shutil.copytree(PACK, tmp_path / "pack"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_revision_ignores_comments_and_tracks_meaning(pack: Path) -> None:
    base = PolicySet.load(pack).revision
    (pack / "access.yaml").write_text("# note\n" + (pack / "access.yaml").read_text())
    assert PolicySet.load(pack).revision == base
    edit(pack / "access.yaml", "max_tokens: 2048", "max_tokens: 2047")
    assert PolicySet.load(pack).revision != base


@pytest.mark.parametrize(
    "old,new,line,words",
    [
        ("max_tokens: 2048", "max_tokens: lots", 13, "max_tokens"),
        (
            "    tools: true\n      rate: {requests_per_minute: 60",
            "    tool: true\n      rate: {requests_per_minute: 60",
            16,
            "tool",
        ),
        ('match: ["pii.*"]\n      action: redact', 'match: ["pi.*"]\n      action: redact', 31, "matches no category"),
        (
            "reasoning_visible: false            # the",
            "reasoning_visible: false\n      reasoning_visible: true #",
            16,
            "duplicate key",
        ),
    ],
)
def test_errors_name_file_and_line(pack: Path, old: str, new: str, line: int, words: str) -> None:
    target = pack / ("guardrails.yaml" if "pii" in old else "access.yaml")
    edit(target, old, new)
    with pytest.raises(PolicyError) as err:
        PolicySet.load(pack)
    assert str(err.value).startswith(f"{target}:{line}: ") and words in str(err.value)


def test_bad_regex_and_bad_yaml(pack: Path) -> None:
    edit(pack / "guardrails.yaml", r"patterns: ['\b(?:TOP", r"patterns: ['\b((?:TOP")
    with pytest.raises(PolicyError, match=r"guardrails.yaml:\d+: .*does not compile"):
        PolicySet.load(pack)
    (pack / "guardrails.yaml").write_text("input: [unclosed\n")
    with pytest.raises(PolicyError, match=r"guardrails.yaml:2: invalid YAML"):
        PolicySet.load(pack)


def test_reload_is_atomic(pack: Path) -> None:
    engine = PolicyEngine(PolicySet.load(pack))
    before = engine.current
    edit(pack / "access.yaml", "version: 1", "version: 0")
    with pytest.raises(PolicyError):
        engine.reload(pack)
    assert engine.current is before
    edit(pack / "access.yaml", "version: 0", "version: 2")
    assert engine.reload(pack).version == 2 and engine.current.version == 2


def test_signed_packs(pack: Path, tmp_path: Path) -> None:
    key = keys.generate_private_key()
    trust = [key.public_key()]
    with pytest.raises(PolicyError, match="no signature file"):
        PolicySet.load(pack, require_signed=True, trust=trust)
    oms.sign_folder(pack, key, signature_name="policy.sig")
    engine = PolicyEngine(PolicySet.load(pack, require_signed=True, trust=trust))
    assert engine.current.signed_by == keys.key_hint(trust[0])
    with pytest.raises(PolicyError, match="policy signature refused"):
        PolicySet.load(pack, require_signed=True, trust=[keys.generate_private_key().public_key()])
    old = Path(shutil.copytree(pack, tmp_path / "old"))
    edit(pack / "access.yaml", "version: 1", "version: 2")
    with pytest.raises(PolicyError, match="does not match its signed digest"):
        engine.reload(pack, require_signed=True, trust=trust)
    oms.sign_folder(pack, key, signature_name="policy.sig")
    assert engine.reload(pack, require_signed=True, trust=trust).version == 2
    with pytest.raises(PolicyError, match="older than the version 2 in force"):
        engine.reload(old, require_signed=True, trust=trust)
    assert engine.current.version == 2


def test_cli_check_test_and_errors(pack: Path, tmp_path: Path) -> None:
    proc = run_cli("policy", "check", str(pack), data_dir=tmp_path / "var", check=True)
    assert f"revision: {PolicySet.load(pack).revision}" in proc.stdout
    proc = run_cli("policy", "test", str(pack), data_dir=tmp_path / "var", check=True)
    assert proc.stdout.strip().endswith(")") and "FAIL" not in proc.stdout
    edit(pack / "access.yaml", "max_tokens: 2048", "max_tokens: -1")
    assert one_line_error(run_cli("policy", "check", str(pack), data_dir=tmp_path / "var")).startswith(
        f"error: {pack / 'access.yaml'}:13: "
    )
    edit(pack / "access.yaml", "max_tokens: -1", "max_tokens: 2048")
    edit(pack / "tests" / "access.yaml", "max_tokens: 2048, reasoning_visible", "max_tokens: 99, reasoning_visible")
    proc = run_cli("policy", "test", str(pack), data_dir=tmp_path / "var")
    assert proc.returncode == 1 and "FAIL: 28/29" in proc.stdout


def test_cli_sign_then_required(pack: Path, tmp_path: Path) -> None:
    key = keys.generate_private_key()
    keys.write_private_key(key, tmp_path / "policy.key")
    keys.write_public_key(key.public_key(), tmp_path / "var" / "trust" / "policy" / "site.pub")
    run_cli("policy", "sign", str(pack), "--key", str(tmp_path / "policy.key"), check=True)
    env = {"APPLIANCE_REQUIRE_SIGNED_POLICY": "true"}
    assert (
        "signed by key" in run_cli("policy", "check", str(pack), data_dir=tmp_path / "var", env=env, check=True).stdout
    )
    (pack / "access.yaml").write_text((pack / "access.yaml").read_text() + "\n# tampered\n")
    assert "policy signature refused" in one_line_error(
        run_cli("policy", "check", str(pack), data_dir=tmp_path / "var", env=env)
    )
