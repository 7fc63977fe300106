"""The dashboard as an ASGI application (Starlette routes, Jinja2 pages, no JavaScript framework).

Security, in one place: with a ``token`` every request must present it (``Authorization:
Bearer``, or once as ``?token=`` in a browser, which then keeps it in a cookie); every
mutation is a POST carrying the CSRF token of the page it came from; ``read_only`` leaves the
mutations out altogether; ``allowed_hosts`` (set by ``bananas dashboard`` on loopback) refuses
requests addressed to any other host name, so a web page cannot reach the dashboard through
DNS rebinding. Pages escape everything they show (Jinja2 autoescape).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.dashboard import views
from bananas.errors import BackendUnavailable, BananasError
from bananas.timefmt import parse_time

__all__ = ["CSRF_COOKIE", "CSRF_FIELD", "TOKEN_COOKIE", "create_app"]

HERE = Path(__file__).parent
CSRF_COOKIE = "bananas_csrf"
CSRF_FIELD = "csrf"
TOKEN_COOKIE = "bananas_token"
MAX_FORM_BYTES = 1 << 20
"""A mutation's form is a list of job ids; anything larger is refused."""

SECURITY_HEADERS = [
    # Scripts only from the package's own files (an injected inline script would not run even
    # if escaping failed); no framing, so no page can trick a click on requeue or purge.
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]

MAX_PAGE = 1_000_000
"""Pages beyond this are clamped (a store takes offsets up to 2**31 - 1)."""

Handler = Callable[[Request], Awaitable[Response]]


class Dashboard:
    """The state one dashboard app shares between requests."""

    def __init__(
        self,
        backend: Backend,
        *,
        owns_backend: bool,
        read_only: bool,
        token: str | None,
        schedules: Sequence[Any],
        refresh_seconds: float,
    ) -> None:
        self.backend = backend
        self.owns_backend = owns_backend
        self.read_only = read_only
        self.token = token or None
        self.schedules = list(schedules)
        self.refresh_seconds = refresh_seconds
        self.secret = secrets.token_bytes(32)
        self.history = views.History()
        self.seen_workers = views.SeenWorkers()
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            human_time=_human_time,
            capitalize_first=_capitalize_first,
            dict_total=_dict_total,
            spark=_spark,
            spark_top=_spark_top,
            span=_span,
        )

    # -- security ---------------------------------------------------------------------

    def csrf_for(self, request: Request) -> str:
        """The CSRF token of this browser: an HMAC of its random cookie under this process's secret."""
        cookie = request.cookies.get(CSRF_COOKIE) or request.state.new_csrf_cookie
        return hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, given: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not given:
            return False
        expected = hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()
        return _same(expected, given)

    def token_cookie(self) -> str:
        assert self.token is not None
        return hmac.new(self.secret, self.token.encode(), hashlib.sha256).hexdigest()

    def bearer_ok(self, request: Request) -> bool:
        """True if the request carries the token in ``Authorization: Bearer`` (a script, not a browser)."""
        header = request.headers.get("authorization", "")
        return self.token is not None and header.lower().startswith("bearer ") and _same(header[7:].strip(), self.token)

    def authorised(self, request: Request) -> bool:
        if self.token is None or self.bearer_ok(request):
            return True
        return _same(request.cookies.get(TOKEN_COOKIE, ""), self.token_cookie())

    # -- rendering --------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        html = self.templates.get_template(template).render(
            base=base,
            path=request.url.path.removeprefix(base) or "/",
            backend_name=self.backend.name,
            backend_url=self.backend.url,
            read_only=self.read_only,
            csrf=self.csrf_for(request),
            refresh_ms=int(self.refresh_seconds * 1000),
            **context,
        )
        return HTMLResponse(html, status_code=status)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of secrets, for any characters a client sends."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def _human_time(value: str) -> str:
    """``2026-01-02T03:04:05.678Z`` as ``2026-01-02 03:04:05 UTC``."""
    try:
        return parse_time(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def _capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _dict_total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def _span(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _spark_top(samples: Sequence[dict[str, Any]]) -> int:
    """The largest value the overview's chart draws (its top edge)."""
    return max((max(s["ready"], s["processing"], s["dead"]) for s in samples), default=0) or 1


def _spark(samples: Sequence[dict[str, Any]], key: str) -> str:
    """SVG polyline points (a 300 x 80 box) for ``key`` over ``samples``, scaled to :func:`_spark_top`."""
    top = _spark_top(samples)
    step = 300 / max(len(samples) - 1, 1)
    return " ".join(f"{i * step:.1f},{76 - 72 * s[key] / top:.1f}" for i, s in enumerate(samples))


def _wants_json(request: Request) -> bool:
    return request.url.path.removeprefix(request.scope.get("root_path", "")).startswith("/api/")


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _dashboard(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def _guard(handler: Handler) -> Handler:
    """Run ``handler``; an unreachable store or a store error becomes a 503/500 page (or JSON)."""

    async def guarded(request: Request) -> Response:
        dash = _dashboard(request)
        try:
            return await handler(request)
        except BackendUnavailable as exc:
            status, title, message = 503, "The backend does not answer", str(exc)
        except BananasError as exc:
            status, title, message = 500, "The backend reported an error", str(exc)
        if _wants_json(request):
            return _json({"error": message}, status)
        return dash.page(request, "error.html", status, title=title, message=message)

    return guarded


# -- pages and their JSON twins -----------------------------------------------------------


@_guard
async def overview_page(request: Request) -> Response:
    dash = _dashboard(request)
    data = await views.overview(dash.backend, dash.history)
    if _wants_json(request):
        return _json(data)
    template = "overview_live.html" if request.query_params.get("fragment") else "overview.html"
    return dash.page(request, template, data=data, title="Overview")


@_guard
async def job_page(request: Request) -> Response:
    dash = _dashboard(request)
    job_id = request.path_params["job_id"]
    data = await views.job_detail(dash.backend, job_id)
    if _wants_json(request):
        return _json(data if data is not None else {"error": f"no job {job_id!r}"}, 200 if data else 404)
    if data is None:
        return dash.page(request, "not_found.html", 404, job_id=job_id, title="Job not found")
    flash = _flash(request)
    return dash.page(request, "job.html", job=data, flash=flash, title=f"Job {job_id}")


async def search(request: Request) -> Response:
    """The search box: go to the job with the id typed in."""
    base = request.scope.get("root_path", "")
    job_id = request.query_params.get("id", "").strip()
    if not job_id:
        return RedirectResponse(f"{base}/", status_code=303)
    return RedirectResponse(f"{base}/jobs/{quote(job_id, safe='')}", status_code=303)


_BACK = re.compile(r"/(dlq(\?[^\\]*)?|jobs/[^\\]*)")
_FLASH = re.compile(r"(requeued|purged) \d+ dead jobs?|no job was selected")


def _flash(request: Request) -> str:
    """The outcome a mutation redirected with; anything else in ``?done=`` is ignored, so a
    crafted link cannot put words of its own on the page."""
    done = request.query_params.get("done", "")
    return done if _FLASH.fullmatch(done) else ""


def _page_number(request: Request) -> int:
    try:
        return min(max(int(request.query_params.get("page", "1")), 1), MAX_PAGE)
    except ValueError:
        return 1


@_guard
async def dlq_page(request: Request) -> Response:
    dash = _dashboard(request)
    name = request.query_params.get("name", "").strip()
    data = await views.dead_letters(dash.backend, page=_page_number(request), name=name)
    if _wants_json(request):
        return _json(data)
    flash = _flash(request)
    return dash.page(request, "dlq.html", data=data, flash=flash, title="Dead letters")


@_guard
async def workers_page(request: Request) -> Response:
    dash = _dashboard(request)
    data = await views.workers(dash.backend, dash.seen_workers)
    if _wants_json(request):
        return _json(data)
    return dash.page(request, "workers.html", data=data, title="Workers")


@_guard
async def schedules_page(request: Request) -> Response:
    dash = _dashboard(request)
    data = await views.schedules(dash.backend, dash.schedules)
    if _wants_json(request):
        return _json(data)
    return dash.page(request, "schedules.html", data=data, title="Schedules")


# -- mutations ----------------------------------------------------------------------------


async def _form(request: Request) -> list[tuple[str, str]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ValueError("form too large")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        data = json.loads(body or b"{}")
        ids = data.get("ids") if isinstance(data, dict) else None
        pairs = [("ids", str(i)) for i in ids] if isinstance(ids, list) else []
        if isinstance(data, dict) and isinstance(data.get(CSRF_FIELD), str):
            pairs.append((CSRF_FIELD, data[CSRF_FIELD]))
        return pairs
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _mutation(verb: str) -> Handler:
    """A POST that requeues or purges the dead jobs named in the form (``ids``, or one ``only``)."""

    @_guard
    async def mutate(request: Request) -> Response:
        dash = _dashboard(request)
        api = _wants_json(request)
        try:
            form = await _form(request)
        except ValueError:
            return PlainTextResponse("the form could not be read", status_code=400)
        fields: dict[str, list[str]] = {}
        for key, value in form:
            fields.setdefault(key, []).append(value)
        if not dash.bearer_ok(request) and not dash.csrf_ok(request, (fields.get(CSRF_FIELD) or [""])[0]):
            message = "refused: this form has no valid CSRF token; reload the page and try again"
            return _json({"error": message}, 403) if api else PlainTextResponse(message, status_code=403)
        ids = list(dict.fromkeys(fields.get("only") or fields.get("ids") or []))
        back = (fields.get("back") or ["/dlq"])[0]
        if not _BACK.fullmatch(back):  # only back to one of our pages, never to another site
            back = "/dlq"
        if not dash.backend.supports(Capability.DEAD_LETTER_ADMIN):
            data = views.unsupported(dash.backend, Capability.DEAD_LETTER_ADMIN, f"{verb}ing dead jobs")
            return _json(data, 409) if api else PlainTextResponse(data["reason"], status_code=409)
        if not ids:
            count = 0
        elif verb == "requeue":
            count = await dash.backend.queue.requeue_dead(ids)
        else:
            count = await dash.backend.queue.purge_dead(ids)
        if api:
            return _json({f"{verb}d": count})
        done = f"{verb}d {count} dead job{'s' if count != 1 else ''}" if ids else "no job was selected"
        base = request.scope.get("root_path", "")
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{base}{back}{sep}{urlencode({'done': done})}", status_code=303)

    return mutate


async def _read_only_refusal(request: Request) -> Response:
    message = "refused: this dashboard is read-only (started with --read-only)"
    return _json({"error": message}, 403) if _wants_json(request) else PlainTextResponse(message, status_code=403)


# -- the application ---------------------------------------------------------------------


class _Security:
    """Token check, host check and the CSRF cookie, around every request."""

    def __init__(self, app: ASGIApp, dash: Dashboard, allowed_hosts: Collection[str] | None) -> None:
        self.app, self.dash = app, dash
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if self.allowed_hosts is not None:
            host = (request.headers.get("host") or "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                await PlainTextResponse(f"refused: unexpected Host header {host!r}", status_code=421)(
                    scope, receive, send
                )
                return
        dash = self.dash
        given = request.query_params.get("token")
        if dash.token is not None and given is not None and _same(given, dash.token):
            # A browser's first visit with ?token=: keep it in a cookie and drop it from the address bar.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            target = "/" + request.url.path.lstrip("/")  # "//host" would leave the site
            response: Response = RedirectResponse(target + (f"?{query}" if query else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, dash.token_cookie(), httponly=True, samesite="strict")
            await response(scope, receive, send)
            return
        path = request.url.path.removeprefix(scope.get("root_path", ""))
        if not dash.authorised(request) and not path.startswith("/static/"):
            if path.startswith("/api/") or request.method != "GET":
                response = JSONResponse({"error": "a token is required (Authorization: Bearer TOKEN)"}, 401)
            else:
                html = dash.templates.get_template("login.html").render(
                    base=scope.get("root_path", ""), path=path, title="Token required"
                )
                response = HTMLResponse(html, status_code=401)
            await response(scope, receive, send)
            return
        new_cookie = "" if request.cookies.get(CSRF_COOKIE) else secrets.token_urlsafe(24)
        scope.setdefault("state", {})["new_csrf_cookie"] = new_cookie

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.extend(SECURITY_HEADERS)
                if new_cookie:
                    cookie = f"{CSRF_COOKIE}={new_cookie}; Path=/; HttpOnly; SameSite=Strict"
                    headers.append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def create_app(
    url_or_backend: str | Backend | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
    schedules: Sequence[Any] = (),
    allowed_hosts: Collection[str] | None = None,
    refresh_seconds: float = 2.0,
) -> Starlette:
    """The dashboard as an ASGI application, to serve or mount (``Mount("/bananas", app)``).

    ``url_or_backend``: a backend URL (``None``: as the ``bananas`` command resolves it) or a
    connected :class:`~bananas.backend.Backend`. The app opens a URL's backend itself and
    closes it when its lifespan ends; a given backend stays the caller's to close.
    ``read_only`` removes requeue and purge; ``token`` makes every request present it;
    ``schedules`` (the app's :class:`~bananas.scheduler.Schedule` list) adds cron, zone and
    enabled state to ``/schedules``; ``allowed_hosts`` refuses other ``Host`` headers.
    Raises :class:`~bananas.errors.ConfigError` (or a subclass) for a bad URL.
    """
    if isinstance(url_or_backend, Backend):
        backend, owns = url_or_backend, False
    else:
        from bananas.config import connect_resolved

        backend, _ = connect_resolved(url_or_backend)
        owns = True
    dash = Dashboard(
        backend,
        owns_backend=owns,
        read_only=read_only,
        token=token,
        schedules=schedules,
        refresh_seconds=refresh_seconds,
    )
    routes = [
        Route("/", overview_page),
        Route("/api/overview", overview_page),
        Route("/jobs", search),
        Route("/jobs/{job_id:path}", job_page),
        Route("/api/jobs/{job_id:path}", job_page),
        Route("/dlq", dlq_page),
        Route("/api/dlq", dlq_page),
        Route("/workers", workers_page),
        Route("/api/workers", workers_page),
        Route("/schedules", schedules_page),
        Route("/api/schedules", schedules_page),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for verb in ("requeue", "purge"):
        handler = _read_only_refusal if read_only else _mutation(verb)
        routes += [
            Route(f"/dlq/{verb}", handler, methods=["POST"]),
            Route(f"/api/dlq/{verb}", handler, methods=["POST"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if dash.owns_backend:
                await dash.backend.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = dash
    app.add_middleware(_Security, dash=dash, allowed_hosts=allowed_hosts)
    return app
