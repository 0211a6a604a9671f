"""Where the LLM replicas go (serving/placement.py) and how nodes are named (serving/nodes.py): one per GPU or
N per CPU node on every alive node, a returning worker counted again, member names from cluster.json."""

from __future__ import annotations

from appliance.api.metrics import Metrics
from appliance.cluster.ca import Cluster
from appliance.serving import nodes as node_names
from appliance.serving.nodes import NodeNames, replicas_per_node
from appliance.serving.placement import NodeSlots, llm_placement, node_slots


def _node(address: str, alive: bool = True, cpu: float = 4, gpu: float = 0) -> dict:
    return {"NodeManagerAddress": address, "Alive": alive, "Resources": {"CPU": cpu, "GPU": gpu}}


def test_slots_are_gpus_or_cpu_replicas_per_alive_node():
    nodes = [_node("10.0.0.1", gpu=2), _node("10.0.0.2", gpu=1), _node("10.0.0.3", cpu=1), _node("10.0.0.4", False)]
    assert node_slots(nodes, gpu=True, cpu_per_node=1) == {"10.0.0.1": 2, "10.0.0.2": 1, "10.0.0.3": 0}
    assert node_slots(nodes, gpu=False, cpu_per_node=2) == {"10.0.0.1": 2, "10.0.0.2": 2, "10.0.0.3": 1}


def test_the_policy_follows_nodes_that_leave_and_return():
    table = [_node("10.0.0.1"), _node("10.0.0.2")]
    policy = NodeSlots(gpu=False, cpu_per_node=1, nodes=lambda: table)
    assert policy(None)[0] == 2
    table[1] = _node("10.0.0.2", alive=False)  # the worker lost
    policy._at = -1e9  # past the refresh interval
    assert policy(None)[0] == 1
    table.append(_node("10.0.0.2"))  # it came back: a new node of the same address beside the dead one
    policy._at = -1e9
    assert policy(None)[0] == 2
    table[:] = [_node("10.0.0.1", gpu=0)]
    policy = NodeSlots(gpu=True, cpu_per_node=1, nodes=lambda: table)
    assert policy(None)[0] == 1, "no GPU anywhere: one replica stays pending rather than none"


def test_cpu_replicas_are_capped_per_node_and_gpu_ones_by_their_gpu():
    cpu = llm_placement(False, 2, 64)
    assert cpu["max_replicas_per_node"] == 2 and cpu["autoscaling_config"]["max_replicas"] == 64
    policy = cpu["autoscaling_config"]["policy"]
    assert policy["policy_function"] == "appliance.serving.placement:NodeSlots"
    assert policy["policy_kwargs"] == {"gpu": False, "cpu_per_node": 2}
    assert "max_replicas_per_node" not in llm_placement(True, 1, 64)


def test_nodes_are_named_as_members_and_labels_stay_bounded(tmp_path):
    cluster = Cluster(tmp_path / "cluster")
    names = NodeNames(cluster.folder)
    assert names("10.0.0.1") == "10.0.0.1", "a single host: its address"
    cluster.init("head", ("10.0.0.1",))
    names = NodeNames(cluster.folder)
    assert names("10.0.0.1") == "head"
    others = [names(f"10.9.0.{i}") for i in range(node_names.MAX_OTHERS + 2)]
    assert others[-1] == "other" and len(set(others)) == node_names.MAX_OTHERS + 1

    details = {
        "applications": {
            "appliance": {
                "deployments": {
                    "llm": {
                        "replicas": [
                            {"node_ip": "10.0.0.1", "state": "RUNNING"},
                            {"node_ip": "10.0.0.1", "state": "RUNNING"},
                            {"node_ip": "10.9.0.0", "state": "RUNNING"},
                            {"node_ip": "10.9.0.1", "state": "STARTING"},
                        ]
                    }
                }
            }
        }
    }
    counts = replicas_per_node(details, names)
    assert counts == {"head": 2, "10.9.0.0": 1}
    metrics = Metrics(dict, replicas=lambda: counts)
    text = metrics.render().decode()
    assert 'appliance_serve_replicas{node="head"} 2.0' in text
    assert 'appliance_serve_replicas{node="10.9.0.0"} 1.0' in text
