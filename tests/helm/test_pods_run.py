"""The rendered pods run: what the KubeRay operator would do with the rendered RayService, on this machine.

No Kubernetes cluster can run here, so the test plays the operator and the kubelet (KubeRay v1.7,
`common/pod.go` and `dashboard_httpclient.go`): for the head and one worker of the cpu-test profile it
  - gives each pod its own network namespace, joined by a veth pair (the pod network);
  - gives each container a private mount namespace with every volumeMount bound at its mountPath: the
    ConfigMaps' rendered data, the Secrets written as the site would create them, emptyDirs, the claim;
  - runs the init containers' commands, then `ulimit -n 65536; ray start ...` built from rayStartParams
    and the container's limits plus the variables KubeRay adds (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN from
    the token Secret, RAY_ADDRESS, ...), with no_new_privs and only the rendered env, as UID/GID 10001
    where that user can run this machine's Python;
  - PUTs serveConfigV2 (as JSON) to the head's dashboard `/api/serve/applications/` with the token in
    `x-ray-authorization`, exactly as the operator does, and waits for the application to run;
then calls the API through the worker's serve port from the head's namespace and finds the request in the
audit log. The root filesystem is not made read-only here (that would need a private root per process).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.helm.conftest import one, pod_templates, render, requires_helm

UID = 10001
HEAD_IP, WORKER_IP = "10.231.7.1", "10.231.7.2"
VENV_BIN = str(Path(sys.executable).parent)


def _pod_user() -> str:
    """setpriv's arguments for the pods' UID/GID, where that user can run this Python: on machines whose
    interpreter lives in a private folder (e.g. pyenv under /root) the processes keep this test's user."""
    argv = ["setpriv", "--reuid", str(UID), "--regid", str(UID), "--clear-groups"]
    probe = [*argv, "env", "-i", f"PATH={VENV_BIN}:/usr/bin:/bin", sys.executable, "-c", "pass"]
    ok = shutil.which("setpriv") and subprocess.run(probe, check=False, capture_output=True).returncode == 0
    return " ".join(argv[1:]) if ok else ""


AS_POD_USER = _pod_user()
# The volumes belong to the account the pods' processes run as: 10001, or this test's root where 10001 cannot
# run the interpreter (the appliance refuses to work as root in a folder another account owns).
OWNER = UID if AS_POD_USER else os.geteuid()

pytestmark = [
    requires_helm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("setpriv"),
        reason="needs root, ip netns and setpriv to play the kubelet",
    ),
    # The pods mount an emptyDir on /tmp, which would hide a checkout or venv living under it.
    pytest.mark.skipif(
        any(str(p).startswith("/tmp/") for p in (REPO, VENV_BIN)),
        reason="this checkout lives under /tmp, which the pods' /tmp emptyDir hides",
    ),
]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


class Pod:
    """One pod: a network namespace, its volumes as host folders, its containers run as processes."""

    def __init__(self, name: str, ip: str, template: dict, volumes: dict[str, Path], root: Path) -> None:
        self.name, self.ip, self.spec = name, ip, template["spec"]
        self.dir = root / name
        self.volumes = dict(volumes)
        for v in self.spec["volumes"]:
            if "emptyDir" in v:  # each pod gets its own emptyDirs
                self.volumes[v["name"]] = self.dir / "emptydir" / v["name"]
                self.volumes[v["name"]].mkdir(parents=True)
        os.chown(self.dir / "emptydir", OWNER, OWNER)
        for p in (self.dir / "emptydir").iterdir():
            os.chown(p, OWNER, OWNER)
        self.procs: list[subprocess.Popen] = []

    def argv(self, container: dict, command: str, extra_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """`command` in `container`: its mounts bound in a private mount namespace, its env only, as 10001."""
        binds = []
        # /tmp last: the host folders standing in for the volumes live under this host's /tmp.
        for m in sorted(container["volumeMounts"], key=lambda m: m["mountPath"] == "/tmp"):
            src = self.volumes[m["name"]]
            if "subPath" in m:
                src = src / m["subPath"]
            kind = "-f" if src.is_file() else "-d"
            binds.append(
                f"[ {kind} {m['mountPath']} ] || {'touch' if kind == '-f' else 'mkdir -p'} "
                f"{m['mountPath']}; mount --bind {src} {m['mountPath']}"
                + (f" && mount -o remount,bind,ro {m['mountPath']}" if m.get("readOnly") else "")
            )
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env.update(extra_env, PATH=f"{VENV_BIN}:/usr/bin:/bin", PYTHONPATH=str(REPO))
        # KubeRay's command is `ulimit -n ...; ray start ...` under bash -lc; the kubelet's mounts come first.
        script = (
            "; ".join(binds) + f"; exec setpriv {AS_POD_USER} --no-new-privs "
            f"env -i {' '.join(shlex.quote(f'{k}={v}') for k, v in env.items())} bash -c {shlex.quote(command)}"
        )
        return [
            "ip",
            "netns",
            "exec",
            self.name,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
        ], env

    def run(self, container: dict, command: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv, _ = self.argv(container, command, extra_env)
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)

    def start(self, container: dict, command: str, extra_env: dict[str, str]) -> None:
        argv, _ = self.argv(container, command, extra_env)
        with open(self.dir / f"{container['name']}.log", "w") as log:  # the child keeps its own descriptor
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for p in self.procs:  # the process groups this test started, nothing else
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def ray_start(node: str, params: dict[str, str], resources: dict) -> str:
    """KubeRay's generateRayStartCommand: the params, --block, num-cpus and memory from the limits."""
    params = dict(params, block="true")
    limits = resources.get("limits", {})
    if "num-cpus" not in params and "cpu" in limits:
        params["num-cpus"] = str(int(float(limits["cpu"])))
    if "memory" not in params and "memory" in limits:
        units = {"Gi": 2**30, "Mi": 2**20}
        params["memory"] = str(int(limits["memory"][:-2]) * units[limits["memory"][-2:]])
    # convertParamMap: "true" is a bare switch, "false" is dropped, except for a few boolean-valued flags.
    valued = {"log-color", "include-dashboard", "include-log-monitor"}
    flags = " ".join(
        f"--{k}" if v.lower() == "true" and k not in valued else f"--{k}={v}"
        for k, v in sorted(params.items())
        if v.lower() != "false" or k in valued
    )
    return f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; ray start {'--head ' if node == 'head' else ''}{flags}"


@pytest.fixture
def cluster(tmp_path, signed_tiny_bundle, publisher):
    objects = render("cpu-test")
    rs = one(objects, "RayService")
    templates = pod_templates(rs)
    root = tmp_path / "k8s"
    # What the site and the chart put in place: the Secrets, the ConfigMaps, the claim (bundle imported).
    token = secrets.token_hex(32)
    trust = root / "secret-trust"
    trust.mkdir(parents=True)
    shutil.copy(publisher[1], trust / "publisher.pub")
    audit = root / "secret-audit-key"
    audit.mkdir()
    from appliance.signing import keys

    keys.write_private_key(keys.generate_private_key(), audit / "audit.key")
    configmaps = {}
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        d = root / cm["metadata"]["name"]
        d.mkdir()
        for k, v in cm["data"].items():
            (d / k).write_text(v)
        configmaps[cm["metadata"]["name"]] = d
    data = root / "pvc"
    data.mkdir()
    run_cli(
        "bundle",
        "import",
        str(signed_tiny_bundle),
        "--activate",
        "--trust",
        str(publisher[1]),
        data_dir=data,
        check=True,
    )
    for p in [root, *root.rglob("*")]:
        os.chown(p, OWNER, OWNER)
    volumes = {}
    for v in templates["head"]["spec"]["volumes"]:
        if "persistentVolumeClaim" in v:
            volumes[v["name"]] = data
        elif "configMap" in v:
            volumes[v["name"]] = configmaps[v["configMap"]["name"]]
        elif "secret" in v:
            volumes[v["name"]] = {"appliance-trust": trust, "appliance-audit-key": audit}[v["secret"]["secretName"]]
    suffix = str(os.getpid())
    pods = {
        "head": Pod(f"aph{suffix}", HEAD_IP, templates["head"], volumes, root),
        "worker": Pod(f"apw{suffix}", WORKER_IP, templates["worker/cpu"], volumes, root),
    }
    veth = (f"vh{suffix}", f"vw{suffix}")
    try:
        for pod in pods.values():
            sh("ip", "netns", "add", pod.name)
            sh("ip", "-n", pod.name, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            veth[0],
            "netns",
            pods["head"].name,
            "type",
            "veth",
            "peer",
            "name",
            veth[1],
            "netns",
            pods["worker"].name,
        )
        for pod, dev in zip(pods.values(), veth):
            sh("ip", "-n", pod.name, "addr", "add", f"{pod.ip}/24", "dev", dev)
            sh("ip", "-n", pod.name, "link", "set", dev, "up")
        yield rs, pods, token
    finally:
        for pod in pods.values():
            pod.stop()
            sh("ip", "netns", "del", pod.name, check=False)
        for path in (
            "/etc/appliance/trust",
            "/etc/appliance/policies",
            "/etc/appliance",
            "/var/lib/appliance",
            "/var/run/appliance/keys",
            "/var/run/appliance",
            "/home/appliance",
        ):
            if os.path.isdir(path) and not os.path.ismount(path):
                try:
                    os.rmdir(path)  # the empty mount points left on this host; never anything with content
                except OSError:
                    pass


def _kuberay_env(pod: Pod, node: str, token: str) -> dict[str, str]:
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_CLUSTER_NAME": "appliance-test",
        "RAY_CLUSTER_NAMESPACE": "gpt-oss",
        "RAY_USAGE_STATS_KUBERAY_IN_USE": "1",
        "RAY_PORT": "6379",
        "FQ_RAY_IP": HEAD_IP,
        "RAY_IP": HEAD_IP,
        "RAY_NODE_TYPE_NAME": node,
    }
    env["RAY_ADDRESS"] = "127.0.0.1:6379" if node == "headgroup" else f"{HEAD_IP}:6379"
    if node == "headgroup":
        env.update(RAY_SERVE_KV_TIMEOUT_S="5", RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS="5")
    return env


def _in_head(pods, code: str) -> subprocess.CompletedProcess[str]:
    """Python run in the head pod's network (as the operator's client or an API caller would)."""
    return subprocess.run(
        ["ip", "netns", "exec", pods["head"].name, sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]},
    )


def test_rendered_pods_serve_an_audited_answer(cluster):
    rs, pods, token = cluster
    spec = rs["spec"]["rayClusterConfig"]
    groups = {"head": ("headgroup", spec["headGroupSpec"]), "worker": ("cpu", spec["workerGroupSpecs"][0])}
    for role, pod in pods.items():
        node, group = groups[role]
        env = _kuberay_env(pod, node, token)
        for init in pod.spec["initContainers"]:
            done = pod.run(init, shlex.join(init["command"]), env)
            assert done.returncode == 0, f"{role}/{init['name']}: {done.stdout}{done.stderr}"
            if init["name"] == "verify-bundles":
                assert "OK tiny 1.0.0" in done.stdout
        params = dict(group["rayStartParams"])
        if role == "worker":
            params["address"] = f"{HEAD_IP}:6379"
        params["node-ip-address"] = pod.ip  # the pod IP; Ray would find it from the pod's only interface
        container = pod.spec["containers"][0]
        pod.start(container, ray_start(role, params, container["resources"]), env)
        if role == "head":
            _wait_for(pods, f"http://{HEAD_IP}:8265/api/version", "dashboard", token, pods["head"])

    config = yaml.safe_load(rs["spec"]["serveConfigV2"])
    put = f"""
import httpx, json, sys
url = "http://{HEAD_IP}:8265/api/serve/applications/"
body = {json.dumps(config)!r}
print(httpx.put(url, content=body, headers={{"Content-Type": "application/json"}}, timeout=60).status_code)
print(httpx.put(url, content=body, headers={{"Content-Type": "application/json",
      "x-ray-authorization": "Bearer {token}"}}, timeout=60).status_code)
"""
    out = _in_head(pods, put)
    unauthenticated, deployed = out.stdout.split()
    assert unauthenticated == "401", "the dashboard must refuse a caller without the Ray token"
    assert deployed == "200", out.stdout + out.stderr

    status = f"""
import httpx, json, time
h = {{"x-ray-authorization": "Bearer {token}"}}
for _ in range(120):
    d = httpx.get("http://{HEAD_IP}:8265/api/serve/applications/?api_type=declarative", headers=h, timeout=30).json()
    app = d.get("applications", {{}}).get("appliance", {{}})
    if app.get("status") in ("RUNNING", "DEPLOY_FAILED"):
        break
    time.sleep(2)
print(json.dumps({{"status": app.get("status"), "message": app.get("message", "")[-2000:]}}))
"""
    state = json.loads(_in_head(pods, status).stdout.strip().splitlines()[-1])
    assert state["status"] == "RUNNING", state["message"] + _logs(pods)

    key = pods["worker"].run(
        pods["worker"].spec["containers"][0],
        "appliance keys create --name k8s-test --role user",
        _kuberay_env(pods["worker"], "cpu", token),
    )
    assert key.returncode == 0, key.stderr
    api_key = key.stdout.strip().splitlines()[-1]
    ask = f"""
import httpx, json
r = httpx.post("http://{WORKER_IP}:8000/v1/chat/completions", timeout=120,
               headers={{"Authorization": "Bearer {api_key}"}},
               json={{"model": "tiny", "messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 4}})
print(json.dumps({{"status": r.status_code, "request_id": r.headers.get("x-request-id"), "body": r.text}}))
"""
    answer = _in_head(pods, ask)
    reply = json.loads(answer.stdout.strip().splitlines()[-1])
    assert reply["status"] == 200, reply
    assert json.loads(reply["body"])["object"] == "chat.completion"
    # Serve's proxy may add its own x-request-id beside the appliance's: httpx joins them with commas.
    request_ids = [r.strip() for r in (reply["request_id"] or "").split(",") if r.strip()]
    audit = pods["worker"].run(
        pods["worker"].spec["containers"][0],
        "appliance audit list --limit 20",
        {**_kuberay_env(pods["worker"], "cpu", token), "COLUMNS": "400"},
    )
    mine = [line for line in audit.stdout.splitlines() if any(r in line for r in request_ids)]
    assert any(" request " in line for line in mine) and any(" completion " in line for line in mine), audit.stdout
    verified = pods["worker"].run(
        pods["worker"].spec["containers"][0], "appliance audit verify", _kuberay_env(pods["worker"], "cpu", token)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _wait_for(pods, url: str, what: str, token: str, pod: Pod) -> None:
    code = f"""
import httpx, time
for _ in range(90):
    try:
        httpx.get("{url}", headers={{"x-ray-authorization": "Bearer {token}"}}, timeout=5).raise_for_status()
        print("up")
        break
    except Exception:
        time.sleep(1)
"""
    assert "up" in _in_head(pods, code).stdout, f"{what} never answered" + _logs(pods)


def _logs(pods) -> str:
    return "".join(
        f"\n--- {p.name}/{f.name}\n" + f.read_text()[-3000:] for p in pods.values() for f in p.dir.glob("*.log")
    )
