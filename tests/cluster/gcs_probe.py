"""Whether a cluster head's GCS serves a Ray client holding this certificate and this token: what a node that
wants to join presents first. Run in a namespace, one process per try (Ray reads its TLS and token settings
once per process): `python -m tests.cluster.gcs_probe HOST:PORT FOLDER TOKEN`, FOLDER holding node.crt,
node.key and ca.crt. Prints `accepted` when the GCS listed its nodes, else `refused: ...`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from appliance.cluster.ray_tls import node_environment


def main(address: str, folder: Path, token: Path) -> None:
    os.environ.update(node_environment(folder, token))
    os.environ["RAY_gcs_rpc_server_reconnect_timeout_s"] = "10"  # a refused client gives up after 10 s
    import ray._raylet

    try:
        ray._raylet.GcsClient(address=address).get_all_node_info(timeout=20)
    except Exception as exc:  # noqa: BLE001 - any failure is a refusal; its kind is printed
        print(f"refused: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    else:
        print("accepted", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
