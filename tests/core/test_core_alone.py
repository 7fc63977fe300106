"""The core installs and works without any storage client: redis, sqlalchemy and psycopg
are blocked from importing, and `import bananas` plus a full job round trip on memory://
still work."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    class Block:
        BLOCKED = ("redis", "hiredis", "sqlalchemy", "psycopg", "aiosqlite", "bananas_redis", "bananas_sql")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())

    import bananas
    from bananas.worker import Registry, Executor

    registry = Registry()

    @registry.handler("add")
    def add(ctx, job):
        return job.payload["a"] + job.payload["b"]

    with bananas.Client("memory://alone") as client:
        job_id = client.submit_job("add", {"a": 2, "b": 3})

    import asyncio

    async def work():
        backend = bananas.connect("memory://alone")
        executor = Executor(registry, backend.queue)
        executor.set_result_backend(backend.results)
        [job] = await backend.queue.claim(["default"])
        await executor.execute_job(job)
        return await backend.results.get(job_id)

    result = asyncio.run(work())
    assert result is not None and result.result == 5, result
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in Block.BLOCKED)
    assert not leaked, leaked
    print("ok")
    """
)


def test_core_works_with_no_storage_client_importable() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
