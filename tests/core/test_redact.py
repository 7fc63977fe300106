"""redact_url: no password of a URL reaches a log line or an error message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from bananas.backend import redact_url
from bananas.errors import UnknownBackendScheme
from bananas.plugins import connect
from hypothesis import given
from hypothesis import strategies as st

BANANAS = Path(sys.executable).with_name("bananas")

# Secrets are long and marked, so they cannot occur by chance in the rest of a URL.
secrets = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).map(lambda s: "Zq9" + s)
safe_secrets = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", min_size=6, max_size=20)
secret_names = st.sampled_from(
    ["password", "sslpassword", "PASSWORD", "passwd", "pwd", "secret", "client_secret", "token", "access_token",
     "api_key", "apikey", "sslkey", "credential", "credentials", "auth", "auth_token", "x-auth"]
)  # fmt: skip
schemes = st.sampled_from(
    ["redis", "rediss", "redis+sentinel", "redis+cluster", "postgresql", "postgres", "postgresql+psycopg", "sqlite",
     "memory", "mine", "unix"]
)  # fmt: skip
hosts = st.sampled_from(
    ["localhost:6379", "h1:26379,h2:26379", "db.example.com", "h1,h2:5433", "[::1]:6379", "127.0.0.1", ""]
)
paths = st.sampled_from(["", "/0", "/mymaster/0", "/app", "/var/lib/x.db"])
plain_params = st.lists(
    st.sampled_from(["namespace=team-a", "db=1", "sslmode=require", "target_session_attrs=read-write",
                     "retry_for=2", "application_name=a@b", "schema=s", "table_prefix=p_"]),
    max_size=3,
)  # fmt: skip


def _leaks(secret: str, text: str) -> bool:
    return any(form in text for form in {secret, quote(secret, safe=""), quote(secret)})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://user:pw@localhost/0?namespace=x", "redis://user:***@localhost/0?namespace=x"),
        ("redis://localhost:6379/0?password=pw", "redis://localhost:6379/0?password=***"),
        ("rediss://h/0?namespace=team-a&password=pw&db=1", "rediss://h/0?namespace=team-a&password=***&db=1"),
        ("redis+sentinel://:pw@h1:26379,h2:26379/mymaster/0", "redis+sentinel://:***@h1:26379,h2:26379/mymaster/0"),
        ("redis+cluster://pw@h1:7000,h2:7001", "redis+cluster://***@h1:7000,h2:7001"),
        (
            "postgresql://u:pw@h1,h2/db?target_session_attrs=read-write&password=x",
            "postgresql://u:***@h1,h2/db?target_session_attrs=read-write&password=***",
        ),
        (
            "postgresql://u@h/db?sslpassword=k&sslmode=verify-full",
            "postgresql://u@h/db?sslpassword=***&sslmode=verify-full",
        ),
        (
            "postgresql://h/db?api_key=a;Auth_Token=b&keepalives=1",
            "postgresql://h/db?api_key=***;Auth_Token=***&keepalives=1",
        ),
        ("postgresql://h/db?pass%77ord=x", "postgresql://h/db?pass%77ord=***"),
        ("redis://:p@ss/w#rd@host:1/0", "redis://:***@host:1/0"),  # unescaped '@', '/' and '#'
        ("redis://:pa?ss@host/0", "redis://:***@host/0"),  # an unescaped '?'
        ("redis://[::1:pw@host/0?password=zz", "redis://[:***@host/0?password=***"),  # urlsplit raises on this
        ("postgresql://u:pw@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        ("memory://", "memory://"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("redis://h/0?namespace=x&retry_for=2", "redis://h/0?namespace=x&retry_for=2"),
        ("host=h password=secret user=u", "host=h password=*** user=u"),  # not a URL: conservative
        ("host=h password='a b' user=u", "host=h password=*** user=u"),
        ("user:pw@localhost:6379", "***@localhost:6379"),
    ],
)
def test_redact_url_examples(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@given(
    scheme=schemes, user=st.sampled_from(["", "u", "app"]), secret=secrets, host=hosts, path=paths,
    params=plain_params, name=secret_names, position=st.sampled_from(["userinfo", "query", "both"]),
    encode=st.booleans(),
)  # fmt: skip
def test_a_secret_never_appears(
    scheme: str,
    user: str,
    secret: str,
    host: str,
    path: str,
    params: list[str],
    name: str,
    position: str,
    encode: bool,
) -> None:
    """A secret in the userinfo or in a secret-looking query parameter, escaped or not (and
    among other parameters, before or after them), is replaced by ***."""
    written = quote(secret, safe="") if encode else secret
    userinfo = f"{user}:{written}@" if position in ("userinfo", "both") else ""
    query = list(params)
    if position in ("query", "both"):
        query.insert(len(query) // 2, f"{name}={written}")
    url = f"{scheme}://{userinfo}{host}{path}" + ("?" + "&".join(query) if query else "")
    out = redact_url(url)
    assert not _leaks(secret, out), (url, out)
    assert "***" in out
    if not any("@" in p for p in params):  # a query value with '@' may make more than the secret hidden
        for param in params:  # ordinary parameters are kept as they were
            assert param in out, (url, out)


@given(secret=safe_secrets, host=hosts, path=paths, params=plain_params)
def test_hosts_path_and_plain_parameters_survive(secret: str, host: str, path: str, params: list[str]) -> None:
    url = f"redis+sentinel://:{secret}@{host}{path}?" + "&".join([*params, f"password={secret}"])
    assert redact_url(url) == f"redis+sentinel://:***@{host}{path}?" + "&".join([*params, "password=***"])


@given(text=st.text(max_size=60), secret=secrets, name=secret_names)
def test_anything_with_a_secret_parameter_is_redacted(text: str, secret: str, name: str) -> None:
    """Whatever surrounds it (a URL or not), ``NAME=SECRET`` after a separator loses its value."""
    out = redact_url(f"{text}?{name}={secret}")
    assert secret not in out or secret in text, out


def test_unknown_scheme_error_is_redacted() -> None:
    with pytest.raises(UnknownBackendScheme) as info:
        connect("localhost:6379?password=Zq9hidden")
    assert "Zq9hidden" not in str(info.value) and "password=***" in str(info.value)


def test_backend_url_is_redacted() -> None:
    backend = connect("memory://redact-test?password=Zq9hidden&namespace=n1")
    assert "Zq9hidden" not in backend.url and "Zq9hidden" not in repr(backend)
    assert backend.url == "memory://redact-test?password=***&namespace=n1"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BANANAS_URL", "BANANAS_DEBUG")}
    env["PYTHONPATH"] = str(tmp_path)
    return env


@pytest.mark.slow
def test_unreachable_postgres_error_of_a_real_worker_is_redacted(tmp_path: Path) -> None:
    pytest.importorskip("bananas_sql")
    (tmp_path / "redactapp.py").write_text(
        textwrap.dedent(
            """
            from bananas.worker import Registry

            registry = Registry()
            """
        )
    )
    url = f"postgresql://app:Zq9userinfo@127.0.0.1:{_free_port()}/app?password=Zq9query&retry_seconds=0.5"
    done = subprocess.run(
        [str(BANANAS), "worker", "redactapp:registry", "--url", url],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Zq9" not in output, output
    assert "postgresql://app:***@127.0.0.1" in output and "password=***&retry_seconds=0.5" in output, output
