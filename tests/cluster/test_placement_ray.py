"""The placement on a real two-node Ray (one machine, two raylets): an LLM replica on each node, the gateway
on the head; the worker removed -> one replica left; a worker added again -> it gets its replica back."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, clean_env


def test_replicas_follow_the_nodes_and_the_gateway_stays_on_the_head():
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster.placement_driver"],
        env=clean_env(PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0", RAY_DASHBOARD_ENABLED="0"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    joined, lost, back = (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{"))
    assert joined["llm"] == sorted([joined["head"], joined["worker"]]) and joined["gateway"] == [joined["head"]]
    assert lost["llm"] == [joined["head"]] and lost["gateway"] == [joined["head"]]
    assert back["llm"] == sorted([joined["head"], back["worker"]]) and back["gateway"] == [joined["head"]]
    print(f"worker lost: one replica left after {lost['s']} s; worker back: its replica after {back['s']} s")
