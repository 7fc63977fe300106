"""The dashboard without a browser: the command's safety checks, its isolation from the core,
the token, and the app mounted in another ASGI application (served by a real uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bananas
import pytest
from bananas import Job
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.protocols import WorkerInfo
from servers import free_port

uvicorn = pytest.importorskip("uvicorn", reason="the dashboard extra is not installed")
starlette_routing = pytest.importorskip("starlette.routing")
from bananas.dashboard import create_app  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _bananas(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_listening_beyond_loopback_without_a_token_is_refused_in_one_line(host: str, tmp_path: Path) -> None:
    proc = _bananas("dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--host", host, "--port", "0")
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"bananas: refusing to listen on {host} without a token"), lines[0]
    assert "--token" in lines[0] and "Traceback" not in proc.stderr


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _bananas("dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(port))
    assert proc.returncode == 1, proc
    assert proc.stderr.strip().splitlines() == [f"bananas: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    proc = _bananas("dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--token", "abc", "--port", "0")
    assert proc.returncode == 2 and "too short" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_core_and_its_other_commands_never_import_the_dashboard_libraries() -> None:
    script = (
        "import contextlib, io, sys\n"
        "import bananas\n"
        "from bananas.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['backends']) == 0\n"
        "    assert main(['--url', 'memory://iso', 'stats']) == 0\n"
        "    assert main(['--url', 'memory://iso', 'dlq', 'list']) == 0\n"
        "    assert main(['dashboard', '--help']) == 0\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2'))\n"
        "print(web)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port, in a thread; yield its address."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def _dead_job(url: str, routing_key: str = "default") -> str:
    """Store one dead job (claimed, then failed with no retry left) and return its id."""

    async def go() -> str:
        async with bananas.connect(url) as backend:
            job = Job.create("doomed", {"x": 1}, max_retries=0, routing_key=routing_key)
            await backend.queue.enqueue(job)
            [claimed] = await backend.queue.claim([routing_key])
            await backend.queue.fail(claimed, "boom")
            return job.id

    result: str = asyncio.run(go())
    return result


def test_mounted_in_another_asgi_app(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mounted.db'}"
    _bananas("--url", url, "db", "upgrade").check_returncode()
    job_id = _dead_job(url)
    outer = Starlette(routes=[starlette_routing.Mount("/ops/bananas", app=create_app(url))])
    with serve(outer) as base:
        status, html, headers = _get(base + "/ops/bananas/dlq")
        assert status == 200
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert 'href="/ops/bananas/workers"' in html and f'data-job-id="{job_id}"' in html
        status, body, _ = _get(f"{base}/ops/bananas/api/jobs/{job_id}")
        assert status == 200 and json.loads(body)["status"] == "failed" and json.loads(body)["error"] == "boom"
        status, html, _ = _get(base + "/ops/bananas/dlq?done=Call+0800+now")  # a crafted flash message
        assert status == 200 and "0800" not in html
        status, body, _ = _get(f"{base}/ops/bananas/api/jobs/no-such-job")
        assert status == 404
        status, _, headers = _get(f"{base}/ops/bananas/jobs?id={job_id}")
        assert status == 303 and headers["location"] == f"/ops/bananas/jobs/{job_id}"


def test_a_backend_without_a_capability_gets_a_sentence_not_an_error() -> None:
    full = bananas.connect("memory://no-caps")
    limited = Backend(
        name="limited",
        url="memory://no-caps",
        queue=full.queue,
        results=full.results,
        workers=full.workers,
        capabilities=frozenset(),
    )
    with serve(create_app(limited)) as base:
        for path in ("/dlq", "/schedules"):
            status, html, _ = _get(base + path)
            assert status == 200 and "Not available on this backend" in html, html
        status, body, _ = _get(base + "/api/dlq")
        assert status == 200 and json.loads(body) == {
            "supported": False,
            "reason": "the limited backend does not offer a dead letter queue listing "
            "(it does not declare the 'dead_letter_admin' capability)",
        }
        status, html, _ = _get(base + "/")
        assert status == 200 and "No jobs waiting" in html


def test_a_token_guards_every_page_and_the_api(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'token.db'}"
    _bananas("--url", url, "db", "upgrade").check_returncode()
    job_id = _dead_job(url)
    token = "s3cret-t0ken-for-tests"
    with serve(create_app(url, token=token)) as base:
        assert _get(base + "/api/overview")[0] == 401
        status, html, _ = _get(base + "/dlq")
        assert status == 401 and "needs a token" in html and job_id not in html
        assert _get(base + "/api/overview", {"Authorization": "Bearer wrong-token"})[0] == 401
        assert _get(base + "/api/overview", {"Authorization": "Bearer t\u00f6k\u00e9n"})[0] == 401  # not a 500
        status, body, _ = _get(base + "/api/dlq", {"Authorization": f"Bearer {token}"})
        assert status == 200 and json.loads(body)["jobs"][0]["id"] == job_id
        # A browser's first visit with ?token= gets a cookie and an address without the token.
        status, _, headers = _get(f"{base}/dlq?token={token}")
        assert status == 303 and headers["location"] == "/dlq" and "bananas_token=" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        assert _get(base + "/dlq", {"Cookie": cookie})[0] == 200
        # A browser (the cookie) needs the CSRF token, whatever Authorization header it adds.
        forged = urllib.request.Request(
            base + "/dlq/requeue",
            data=f"only={job_id}".encode(),
            headers={"Cookie": cookie, "Authorization": "Bearer not-the-token"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.build_opener(_NoRedirect).open(forged, timeout=10)
        assert refused.value.code == 403
        # The page a form returns to is one of ours, never another site.
        bounce = urllib.request.Request(
            base + "/dlq/requeue",
            data=urllib.parse.urlencode({"only": "no-such-job", "back": "/\\evil.example"}).encode(),
            headers={"Authorization": f"Bearer {token}"},
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as redirect:
            urllib.request.build_opener(_NoRedirect).open(bounce, timeout=10)
        assert redirect.value.code == 303 and redirect.value.headers["location"].startswith("/dlq?done=")
        # A script with the bearer token needs no CSRF token.
        request = urllib.request.Request(
            base + "/api/dlq/requeue",
            data=json.dumps({"ids": [job_id]}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"requeued": 1}


def test_the_command_refuses_other_host_names_on_loopback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hosts.db'}"
    _bananas("--url", url, "db", "upgrade").check_returncode()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bananas.cli", "dashboard", "--url", url, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"on http://127.0.0.1:{port}/" in line, line
        assert _get(f"http://127.0.0.1:{port}/api/overview")[0] == 200
        # A page of another site that re-points its name at 127.0.0.1 (DNS rebinding) is refused.
        assert _get(f"http://127.0.0.1:{port}/api/overview", {"Host": f"attacker.example:{port}"})[0] == 421
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_a_worker_whose_heartbeat_stopped_is_shown_as_lost() -> None:
    clock = ManualClock()  # the backend's clock: the test moves time by hand
    backend = bananas.connect("memory://lost-worker", clock=clock)

    def info(worker_id: str) -> WorkerInfo:
        return WorkerInfo(
            id=worker_id, host="box", pid=7, routing_keys=["default"], priorities=["high", "normal"],
            concurrency=4, in_flight=1,
        )  # fmt: skip

    async def beat() -> None:
        await backend.workers.heartbeat(info("w-silent"), ttl=60)
        clock.advance(30)
        await backend.workers.heartbeat(info("w-live"), ttl=60)

    asyncio.run(beat())
    with serve(create_app(backend)) as base:
        status, body, _ = _get(base + "/api/workers")
        assert status == 200
        assert {w["id"]: w["lost"] for w in json.loads(body)["workers"]} == {"w-live": False, "w-silent": True}
        status, html, _ = _get(base + "/workers")
        rows = {r.split('"', 1)[0]: r for r in html.split('<tr data-worker-id="')[1:]}
        assert ">live<" in rows["w-live"] and ">lost<" in rows["w-silent"]


def test_every_page_and_its_json_on_each_backend(store_url: str) -> None:
    """Each page answers on each backend, its JSON twin agrees with the store, and a form
    carrying the page's CSRF token (and cookie) requeues."""
    dead_id = _dead_job(store_url, "doomed")

    async def fill() -> None:
        async with bananas.connect(store_url) as backend:
            await backend.queue.enqueue_many(
                [Job.create("send", i, routing_key="api", priority="high") for i in range(2)]
            )
            info = WorkerInfo(id="w-api", host="box", pid=1, routing_keys=["api"], priorities=["high"], concurrency=3)
            await backend.workers.heartbeat(info, ttl=60)

    asyncio.run(fill())
    with serve(create_app(store_url)) as base:
        for path in ("/", "/dlq", "/workers", "/schedules", f"/jobs/{dead_id}"):
            status, html, _ = _get(base + path)
            assert status == 200, (path, html)
        overview = json.loads(_get(base + "/api/overview")[1])
        assert overview["ready"]["api"] == {"high": 2, "normal": 0, "low": 0}
        assert (overview["dead"], overview["workers"]) == (1, 1)
        assert [j["id"] for j in json.loads(_get(base + "/api/dlq")[1])["jobs"]] == [dead_id]
        assert json.loads(_get(base + "/api/dlq?name=other")[1])["jobs"] == []
        assert json.loads(_get(f"{base}/api/jobs/{dead_id}")[1])["error"] == "boom"
        assert [w["id"] for w in json.loads(_get(base + "/api/workers")[1])["workers"]] == ["w-api"]
        schedules = json.loads(_get(base + "/api/schedules")[1])
        assert schedules.get("schedules") == [] or schedules["supported"] is False

        status, html, headers = _get(base + "/dlq")
        cookie = headers["set-cookie"].split(";")[0]
        csrf = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = urllib.parse.urlencode({"csrf": csrf, "only": dead_id, "back": "/dlq"}).encode()
        request = urllib.request.Request(base + "/dlq/requeue", data=form, headers={"Cookie": cookie}, method="POST")
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:  # the 303 back to the list
            opener.open(request, timeout=10)
        assert redirect.value.code == 303 and "requeued+1+dead+job" in redirect.value.headers["location"]
        assert json.loads(_get(base + "/api/dlq")[1])["jobs"] == []
        assert json.loads(_get(base + "/api/overview")[1])["ready"]["doomed"]["normal"] == 1


def test_a_worker_that_left_the_registry_is_listed_as_gone() -> None:
    backend = bananas.connect("memory://gone-worker")
    info = WorkerInfo(id="w-gone", host="box", pid=9, routing_keys=["default"], priorities=["normal"], concurrency=2)
    asyncio.run(backend.workers.heartbeat(info, ttl=60))
    with serve(create_app(backend)) as base:
        first = json.loads(_get(base + "/api/workers")[1])
        assert [w["id"] for w in first["workers"]] == ["w-gone"] and first["gone"] == []
        asyncio.run(backend.workers.deregister("w-gone"))
        after = json.loads(_get(base + "/api/workers")[1])
        assert after["workers"] == []
        assert [(w["id"], w["state"]) for w in after["gone"]] == [("w-gone", "gone")]
        status, html, _ = _get(base + "/workers")
        assert status == 200 and "No live workers" in html and ">gone<" in html


def test_an_unreachable_store_is_a_503_page_that_says_so() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serve(create_app(f"redis://127.0.0.1:{port}/0?retry_for=0.3")) as base:
        status, html, _ = _get(base + "/")
        assert status == 503 and "The backend does not answer" in html and "Traceback" not in html
        status, body, _ = _get(base + "/api/overview")
        assert status == 503 and "unreachable" in json.loads(body)["error"]


def test_the_dead_letter_queue_pages_and_filters_by_name() -> None:
    backend = bananas.connect("memory://many-dead")

    async def kill(count: int) -> None:
        for i in range(count):
            name = "send" if i % 3 else "resize"
            await backend.queue.enqueue(Job.create(name, i, max_retries=0))
            [claimed] = await backend.queue.claim(["default"])
            await backend.queue.fail(claimed, f"boom {i}")

    asyncio.run(kill(30))
    with serve(create_app(backend)) as base:
        first = json.loads(_get(base + "/api/dlq")[1])
        second = json.loads(_get(base + "/api/dlq?page=2")[1])
        assert (first["total"], len(first["jobs"]), first["more"]) == (30, 25, True)
        assert (len(second["jobs"]), second["more"]) == (5, False)
        seen = [j["payload"] for j in first["jobs"] + second["jobs"]]
        assert sorted(seen) == list(range(30))  # every dead job once, over the two pages
        resize = json.loads(_get(base + "/api/dlq?name=resize")[1])
        assert resize["total"] == 10 and {j["name"] for j in resize["jobs"]} == {"resize"}
        status, html, _ = _get(base + "/dlq?page=2")
        assert status == 200 and "← Newer" in html and "Older →" not in html
