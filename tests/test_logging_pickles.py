"""Ray Serve pickles a deployment class by value with the module globals it uses, its `log` proxy included:
once logging is configured on a stream other than the process's own (a test's captured stderr) and a
message has been logged, the class must still pickle, or every later deployment in that process fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO, clean_env

SCRIPT = textwrap.dedent("""
    import io, sys
    import structlog  # imported with the process's own streams
    real, sys.stderr = sys.stderr, io.TextIOWrapper(io.BytesIO())  # then a captured one, as pytest does
    from appliance.logs import configure_logging
    configure_logging()
    from appliance.serving import deployments
    deployments.log.info("logged on the captured stream")
    sys.stderr = real
    from ray import cloudpickle
    cloudpickle.dumps(deployments.LLMServer.func_or_class)
    cloudpickle.dumps(deployments.Gateway.func_or_class)
    print("pickled")
""")


def test_deployments_pickle_after_logging_on_a_captured_stream():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=clean_env(PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "pickled", done.stderr[-2000:]
