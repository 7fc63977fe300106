"""The optional libraries stay optional: importing the core imports neither prometheus_client nor
OpenTelemetry; a worker started the way users start it (with its default "System metrics" line)
runs jobs with both missing, and without a metrics port never imports prometheus_client even
where it is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, uuid

    OPTIONAL = ("prometheus_client", "opentelemetry")
    tried = []

    class Block:  # as if the extras were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in OPTIONAL:
                tried.append(name)
                raise ImportError(f"blocked for this test: {name}")
            return None

    if os.environ.get("BLOCK_OPTIONAL"):
        sys.meta_path.insert(0, Block())

    import bananas, bananas.client, bananas.worker, bananas.observe, bananas.metrics
    from bananas.worker.command import main

    def loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL)

    after_import = loaded()
    url = f"memory://imports-{uuid.uuid4().hex}"
    done = threading.Event()

    def submit_then_stop():
        with bananas.Client(url) as client:
            job_id = client.submit_job("ok", {"x": 1})
            result = client.wait_for_result(job_id, timeout=30)
        done.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=submit_then_stop, daemon=True).start()
    code = main(["metrics_app:registry", "--url", url, "--metrics-interval", "1s"])
    report = {"after_import": after_import, "after_worker": loaded(), "code": code, "done": done.is_set()}
    print(json.dumps({**report, "tried": tried}))
    """
)


def run_worker_script(block: bool) -> dict[str, object]:
    here = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BANANAS_METRICS"))}
    env["PYTHONPATH"] = os.pathsep.join([str(here), env.get("PYTHONPATH", "")])
    if block:
        env["BLOCK_OPTIONAL"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["code"], report["done"]) == (0, True), proc.stderr
    return report


@pytest.mark.slow
def test_importing_the_core_imports_no_optional_library() -> None:
    assert run_worker_script(block=False)["after_import"] == []


@pytest.mark.slow
def test_a_worker_runs_jobs_with_the_optional_libraries_missing() -> None:
    report = run_worker_script(block=True)
    assert report["after_worker"] == []
    assert not [name for name in report["tried"] if str(name).startswith("prometheus_client")]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_worker_without_a_metrics_port_never_imports_prometheus_client() -> None:
    report = run_worker_script(block=False)
    assert not [name for name in report["after_worker"] if str(name).startswith("prometheus_client")]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_metrics_port_without_prometheus_client_is_one_line_and_exit_code_2() -> None:
    script = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "prometheus_client":
                    raise ImportError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Block())
        from bananas.worker.command import main

        sys.exit(main(["metrics_app:registry", "--url", "memory://", "--metrics-port", "0"]))
        """
    )
    here = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BANANAS_METRICS"))}
    env["PYTHONPATH"] = os.pathsep.join([str(here), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bananas worker:")]
    assert len(errors) == 1, proc.stderr
    assert "serving metrics needs prometheus_client: pip install 'bananas-core[prometheus]'" in errors[0]
    assert "Traceback" not in proc.stderr
