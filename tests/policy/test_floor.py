"""Rollback protection for signed packs survives a restart: the version floor is kept on disk."""

from __future__ import annotations

import shutil

import pytest
import yaml

from appliance.config import Settings
from appliance.policy import PolicyEngine, PolicyError, PolicySet
from appliance.policy.pack import SIGNATURE_NAME, floor_file
from appliance.signing import keys, oms
from tests.conftest import REPO


def signed_pack(dest, key, version: int):
    shutil.copytree(REPO / "policies", dest)
    access = yaml.safe_load((dest / "access.yaml").read_text())
    access["pack"]["version"] = version
    (dest / "access.yaml").write_text(yaml.safe_dump(access))
    oms.sign_folder(dest, key, signature_name=SIGNATURE_NAME)
    return dest


def test_older_signed_pack_is_refused_after_restart(tmp_path):
    key = keys.generate_private_key()
    settings = Settings(data_dir=tmp_path / "var", require_signed_policy=True, policy_dir=tmp_path / "v2")
    keys.write_public_key(key.public_key(), settings.policy_trust_dir / "site.pub")
    v2, v1 = signed_pack(tmp_path / "v2", key, 2), signed_pack(tmp_path / "v1", key, 1)
    PolicyEngine(PolicySet.from_settings(settings), floor_file=floor_file(settings))  # a gateway puts v2 in force
    assert floor_file(settings).read_text().strip() == "2"
    # "restart" with the old pack on disk: refused, though no engine remembers v2 in memory
    with pytest.raises(PolicyError, match="older than the version 2"):
        PolicySet.from_settings(settings, v1)
    # and checking a newer pack does not move the floor; only putting it in force does
    v3 = signed_pack(tmp_path / "v3", key, 3)
    PolicySet.from_settings(settings, v3)
    assert floor_file(settings).read_text().strip() == "2"
    assert v2.is_dir()
