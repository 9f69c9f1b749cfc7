"""The web UI's FastAPI app: pages (server-rendered Jinja2), the login, and the few writes
(review decisions, promote, rollback, rollout changes), each through the same function as the CLI.

Routes are thin: check the session (and the CSRF token and the role for a write), call
:mod:`tunesmith.ui.pages` or the stage's function, render. A write that is refused (stale item,
a value outside the allowed ones, a reviewer pressing promote, an expired session) writes
nothing and says why on the page.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tunesmith.config import Config
from tunesmith.errors import TunesmithError
from tunesmith.ui import pages, review
from tunesmith.ui.auth import COOKIE, Session, Sessions, UiKeys, csrf_ok
from tunesmith.ui.project import Project

HERE = Path(__file__).parent
LOGIN_COOKIE = "tunesmith_ui_login"
NAV = [("overview", "/", "Overview"), ("models", "/models", "Models"), ("evaluation", "/evaluation", "Evaluation"),
       ("runs", "/runs", "Training runs"), ("data", "/data", "Data"), ("review", "/review", "Review"),
       ("deployments", "/deployments", "Deployments"), ("monitoring", "/monitoring", "Monitoring")]
WHY = {"expired": "Your session expired: log in again. Nothing was written.",
       "invalid": "Your session cookie was not valid: log in again.",
       "revoked": "Your key is no longer accepted: ask an admin for a new one.",
       None: None}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store"}


class LoginRequired(Exception):
    def __init__(self, why: str | None):
        self.why = why


@dataclass
class Ctx:
    """What every page handler needs."""

    request: Request
    session: Session
    project: Project

    @property
    def base(self) -> str:
        return self.request.scope.get("root_path", "")


def create_ui_app(cfg: Config, *, keys: UiKeys | None = None, secret: str | None = None,
                  session_seconds: int | None = None) -> FastAPI:
    """The UI over ``cfg``'s workspace; ``keys`` default to :meth:`UiKeys.load` (the
    environment). Mount it (``app.mount("/ui", create_ui_app(cfg))``) or run it alone."""
    keys = keys or UiKeys.load()
    sessions = Sessions(keys, secret=secret, **({"max_age": session_seconds} if session_seconds else {}))
    project = Project.open(cfg)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(pct=_pct, num=_num, when=_when, short=lambda s, n=12: (s or "")[:n])

    def warm_up() -> None:
        """What the first visits would otherwise wait for: the PII scrubber (~0.3 s) and the
        compiled templates, built in the background at start."""
        project.scrub("")
        for name in templates.env.list_templates():
            templates.env.get_template(name)

    warm = threading.Thread(target=warm_up, name="tunesmith-ui-warm", daemon=True)
    warm.start()
    app = FastAPI(title="tunesmith ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.project, app.state.sessions, app.state.warming = project, sessions, warm
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render(request: Request, name: str, ctx: dict[str, Any], *, session: Session | None = None,
               status: int = 200, active: str = "") -> HTMLResponse:
        base = request.scope.get("root_path", "")
        started = getattr(request.state, "started", time.perf_counter())
        response = templates.TemplateResponse(request, name, {
            **ctx, "base": base, "nav": NAV, "active": active, "session": session, "project": project.name,
            "csrf": session.csrf if session else "", "render_ms": lambda: (time.perf_counter() - started) * 1000},
            status_code=status)
        return response

    def need(request: Request) -> Ctx:
        session, why = sessions.read(request.cookies.get(COOKIE))
        if session is None:
            raise LoginRequired(why)
        return Ctx(request, session, project)

    async def need_form(request: Request) -> tuple[Ctx, dict[str, str]] | HTMLResponse:
        ctx = need(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not csrf_ok(ctx.session, form.get("csrf")):
            return render(request, "message.html", {
                "title": "Refused", "message": "The form's security token did not match (a page open from before a "
                "new login, or a request from another site). Nothing was written: reload the page and try again."},
                session=ctx.session, status=403)
        return ctx, form

    def admin_only(ctx: Ctx, what: str) -> HTMLResponse | None:
        if ctx.session.user.admin:
            return None
        return render(ctx.request, "message.html", {
            "title": "Admins only", "message": f"Only an admin may {what}. You are logged in as "
            f"{ctx.session.user.name} (role {ctx.session.user.role}); nothing was written."},
            session=ctx.session, status=403)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        request.state.started = time.perf_counter()
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            if k != "Cache-Control" or not request.url.path.startswith(request.scope.get("root_path", "") + "/static"):
                response.headers.setdefault(k, v)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        base = request.scope.get("root_path", "")
        target = request.url.path.removeprefix(base) or "/"
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        elif request.method != "GET":  # back to the page the form was on (a POST url cannot be reopened)
            referer = urlsplit(request.headers.get("referer", ""))
            same = referer.netloc == request.url.netloc and referer.path.startswith(base)
            target = (referer.path.removeprefix(base) + (f"?{referer.query}" if referer.query else "")) if same else "/"
        query = urlencode({"next": target, **({"why": exc.why} if exc.why else {})})
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": f"{base}/login?{query}"})
        return RedirectResponse(f"{base}/login?{query}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> HTMLResponse:
        session, _ = sessions.read(request.cookies.get(COOKIE))
        what = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:]) or e['loc'][0]}: {e['msg']} (got {e.get('input')!r})"
                         for e in exc.errors()[:3])
        return render(request, "message.html", {"title": "Not possible", "message": f"bad address: {what}"},
                      session=session, status=400)

    @app.exception_handler(TunesmithError)
    async def user_error(request: Request, exc: TunesmithError) -> HTMLResponse:
        session, _ = sessions.read(request.cookies.get(COOKIE))
        return render(request, "message.html", {"title": "Not possible", "message": str(exc)}, session=session,
                      status=400)

    # ------------------------------------------------------------------ login
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/", why: str | None = None) -> HTMLResponse:
        token = secrets.token_urlsafe(16)
        response = render(request, "login.html", {"next": _safe_next(next), "why": WHY.get(why), "login_csrf": token})
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", max_age=3600,
                            path=request.scope.get("root_path", "") or "/")
        return response

    @app.post("/login", response_model=None)
    async def login(request: Request) -> Response:
        form = await request.form()
        base = request.scope.get("root_path", "")
        cookie, token = request.cookies.get(LOGIN_COOKIE, ""), str(form.get("login_csrf", ""))
        next_url = _safe_next(str(form.get("next", "/")))
        error = None
        if not cookie or not secrets.compare_digest(cookie, token):
            error = "The login form expired (or came from another site): try again."
        elif (user := keys.login(str(form.get("key", "")))) is None:
            error = "That key is not accepted."
        if error:
            fresh = secrets.token_urlsafe(16)
            response = render(request, "login.html", {"next": next_url, "why": error, "login_csrf": fresh}, status=401)
            response.set_cookie(LOGIN_COOKIE, fresh, httponly=True, samesite="strict", max_age=3600, path=base or "/")
            return response
        response = RedirectResponse(base + next_url, status_code=303)
        # a browser-session cookie: the expiry is the signature's, so the server can say "expired"
        response.set_cookie(COOKIE, sessions.issue(user), httponly=True, samesite="strict", path=base or "/")
        response.delete_cookie(LOGIN_COOKIE, path=base or "/")
        return response

    @app.post("/logout", response_model=None)
    async def logout(request: Request) -> Response:
        checked = await need_form(request)
        if isinstance(checked, HTMLResponse):
            return checked
        base = request.scope.get("root_path", "")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE, path=base or "/")
        return response

    # ------------------------------------------------------------------ pages
    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        ctx = need(request)
        return render(request, "overview.html", pages.overview(project), session=ctx.session, active="overview")

    @app.get("/models", response_class=HTMLResponse)
    def models(request: Request, msg: str | None = None) -> HTMLResponse:
        ctx = need(request)
        return render(request, "models.html", {**pages.models(project), "msg": msg}, session=ctx.session,
                      active="models")

    @app.get("/models/{ref}", response_class=HTMLResponse)
    def model(request: Request, ref: str, msg: str | None = None) -> HTMLResponse:
        ctx = need(request)
        return render(request, "model.html", {**pages.model(project, ref, ctx.base), "msg": msg},
                      session=ctx.session, active="models")

    @app.post("/models/promote", response_model=None)
    async def promote(request: Request) -> Response:
        checked = await need_form(request)
        if isinstance(checked, HTMLResponse):
            return checked
        ctx, form = checked
        if refused := admin_only(ctx, "promote a version"):
            return refused
        change = project.registry.promote(form.get("ref", ""), form.get("alias") or "champion",
                                          force=form.get("force") == "on", reason=form.get("reason"),
                                          by=ctx.session.user.name)
        msg = (f"@{change.alias} → {change.model_id[:12]} (ledger row {change.move.seq})" if change.move
               else f"@{change.alias} already points at {change.model_id[:12]}: nothing written")
        return RedirectResponse(f"{ctx.base}/models/{change.model_id}?msg={quote(msg)}", status_code=303)

    @app.post("/models/rollback", response_model=None)
    async def rollback(request: Request) -> Response:
        checked = await need_form(request)
        if isinstance(checked, HTMLResponse):
            return checked
        ctx, form = checked
        if refused := admin_only(ctx, "roll back an alias"):
            return refused
        change = project.registry.rollback(form.get("alias") or "champion", reason=form.get("reason"),
                                           by=ctx.session.user.name)
        msg = f"@{change.alias} rolled back {change.previous and change.previous[:12]} → {change.model_id[:12]}"
        return RedirectResponse(f"{ctx.base}/models?msg={quote(msg)}", status_code=303)

    @app.get("/evaluation", response_class=HTMLResponse)
    def evaluation(request: Request, eval: str | None = None, field: str | None = None, q: str = "",
                   page: int = 1) -> HTMLResponse:
        ctx = need(request)
        data = pages.evaluation(project, eval, field=field or None, query=q, page=page)
        return render(request, "evaluation.html", data, session=ctx.session, active="evaluation")

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request, model: str | None = None) -> HTMLResponse:
        ctx = need(request)
        return render(request, "runs.html", pages.runs(project, model), session=ctx.session, active="runs")

    @app.get("/data", response_class=HTMLResponse)
    def data(request: Request, snapshot: str | None = None, page: int = 1) -> HTMLResponse:
        ctx = need(request)
        return render(request, "data.html", pages.data(project, snapshot, page), session=ctx.session, active="data")

    @app.get("/data/{snapshot}/plot/{name}", response_model=None)
    def data_plot(request: Request, snapshot: str, name: str) -> Response:
        need(request)
        art = project.ws.get("snapshot", snapshot)
        plots = {f.name: f for f in art.path.glob("*.png")}
        if name not in plots:
            return Response("no such plot", status_code=404)
        return Response(plots[name].read_bytes(), media_type="image/png")

    @app.get("/deployments", response_class=HTMLResponse)
    def deployments(request: Request, msg: str | None = None) -> HTMLResponse:
        ctx = need(request)
        return render(request, "deployments.html", {**pages.deployments(project), "msg": msg}, session=ctx.session,
                      active="deployments")

    @app.post("/deployments/rollout", response_model=None)
    async def rollout_change(request: Request) -> Response:
        from tunesmith.serve.rollout_admin import abort_rollout, set_rollout

        checked = await need_form(request)
        if isinstance(checked, HTMLResponse):
            return checked
        ctx, form = checked
        if refused := admin_only(ctx, "change the rollout"):
            return refused
        if form.get("action") == "abort":
            abort_rollout(project.cfg, reason=form.get("reason", ""), by=ctx.session.user.name)
            msg = "rollout aborted: challenger traffic stopped"
        else:
            set_rollout(project.cfg, mode=form.get("mode") or None, share=_fraction(form.get("share"), "share"),
                        shadow_share=_fraction(form.get("shadow_share"), "shadow share"),
                        reason=form.get("reason") or None, by=ctx.session.user.name)
            msg = "rollout settings recorded; running servers apply them within a second"
        return RedirectResponse(f"{ctx.base}/deployments?msg={quote(msg)}", status_code=303)

    @app.get("/monitoring", response_class=HTMLResponse)
    def monitoring(request: Request) -> HTMLResponse:
        ctx = need(request)
        return render(request, "monitoring.html", pages.monitoring(project), session=ctx.session, active="monitoring")

    review.install(app, project, render, need, need_form)
    return app


def _safe_next(target: str) -> str:
    """Only a path inside the UI (never another site: an open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _fraction(value: str | None, name: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise TunesmithError(f"the {name} must be a number within 0..1, got {value!r}") from None


def _pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v * 100:.{digits}f}%"


def _num(v: Any, fmt: str = ".3f") -> str:
    if v is None:
        return "—"
    return format(v, fmt) if isinstance(v, int | float) else str(v)


def _when(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC"
