"""The stockops Airflow plugin: DAG-run records for the DORA report, and links to the tools around Airflow.

* A listener appends every ``stock_*`` DAG run's start and outcome to ``Settings.dag_run_log``.
* ``external_views`` put links in the Airflow UI (menu *Plugins > StockOps*): MLflow and the BentoML
  API page open in a new tab; the Evidently monitor report, the GX Data Docs and the DORA chart are
  shown inside the Airflow UI.
* Those three are files under the stockops home, which a browser cannot open from the web UI, so a
  small web app, mounted by the api-server at ``/stockops``, serves them (and only files under the home;
  the Data Docs as pages of its own drawn from the stored GX results, :mod:`stockops.data.datadocs`, since
  GX's generated pages load everything from other hosts and show nothing offline),
  and its index is the dashboard (:mod:`stockops.reporting.dashboard`): a sortable, searchable table of every
  ticker (last close, forecast volatility and 90 % interval, realized coverage, drift, data status, a
  sparkline), the champion, the latest gate decision, pending approvals, the DORA measures and incidents;
  ``/stockops/ticker/<TICKER>`` is a ticker's page, its fan chart of the recent forecasts against the
  realized closes and their interval coverage over time.
* Every route of that app is behind Airflow's login: the request must carry the UI's session (the
  ``_token`` cookie) or a REST API bearer token, checked by Airflow's own ``get_user`` (the auth
  manager's ``get_user_from_token``: signature, expiry, revocation), and the user must be allowed to
  see plugin views. Without one, a page request is sent to Airflow's login and anything else gets 401.

Every Airflow component imports this module (the scheduler and each task process too), so only
Airflow and ``stockops.core.settings``/``stockops.core.audit`` are imported here; FastAPI, Airflow's API security
module and the dashboard are imported when the api-server first calls the web app, and settings are
read when a hook or a request runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

from stockops.core import audit
from stockops.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request, Response

log = logging.getLogger(__name__)

URL_PREFIX = "/stockops"
DAG_ID_PREFIX = "stock_"
DORA_MISSING = "No DORA report yet: run .venv/bin/stockops dora"
DOCS_MISSING = "No Great Expectations Data Docs yet: stock_ingest builds them when it validates a snapshot."


# ---- the listener ------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class DagRunRecorder:
    """Appends one ``dag_run`` line to ``Settings.dag_run_log`` per state change of a stockops DAG run.

    Called in the scheduler (and in the api-server when someone marks a run success/failed), so it
    never raises: a failure to record is logged as a warning and the run goes on.
    """

    @hookimpl
    def on_dag_run_running(self, dag_run, msg: str) -> None:
        self.record(dag_run, "running", msg)

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:
        self.record(dag_run, "success", msg)
        self.note(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:
        self.record(dag_run, "failed", msg)
        self.note(dag_run)

    @staticmethod
    def note(dag_run) -> str | None:
        """A finished ``stock_train`` run's note: the gate's verdict and what serves (the grid shows it at a glance).

        Set on the run the scheduler is saving, in its own transaction (no second writer on the metadata DB).
        """
        try:
            if dag_run.dag_id != "stock_train":
                return None
            from stockops.registry.changes import training_note

            text = training_note(get_settings(), dag_run.run_id)
            if text:
                dag_run.note = text
            return text
        except Exception as exc:
            log.warning("stockops: could not note the gate's verdict on %r: %s: %s",
                        getattr(dag_run, "run_id", dag_run), type(exc).__name__, exc)
            return None

    @staticmethod
    def record(dag_run, state: str, msg: str) -> dict | None:
        """Write the record (``None`` for other DAGs or when it could not be written)."""
        try:
            if not str(dag_run.dag_id).startswith(DAG_ID_PREFIX):
                return None
            conf = dag_run.conf
            return audit.record(
                get_settings().dag_run_log,
                "dag_run",
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                state=state,
                run_type=getattr(dag_run.run_type, "value", dag_run.run_type),
                logical_date=_iso(dag_run.logical_date),
                start_date=_iso(dag_run.start_date),
                end_date=_iso(dag_run.end_date),
                reason=conf.get("reason") if isinstance(conf, dict) else None,
                msg=msg,
            )
        except Exception as exc:
            log.warning("stockops: could not record the %s state of DAG run %r: %s: %s",
                        state, getattr(dag_run, "run_id", dag_run), type(exc).__name__, exc)
            return None


# ---- the web app (mounted by the api-server at URL_PREFIX) ---------------------------------


def _file_under_home(path: Path | str | None, settings: Settings) -> Path | None:
    """The file itself if it exists and (symlinks resolved) lies under the stockops home."""
    if not path:
        return None
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_file() and resolved.is_relative_to(settings.home) else None


def latest_monitor_report(settings: Settings) -> dict | None:
    """The last monitor decision that kept an Evidently report (checks that were skipped keep none)."""
    from stockops.core import audit

    return next((entry for entry in reversed(audit.read(settings.monitor_log)) if entry.get("report")), None)


async def session_user(request: Request) -> Any | None:
    """The Airflow user whose session the request carries, or None.

    Airflow's own check, as its REST API and UI make it (``core_api.security.get_user``): a bearer
    token wins over the UI's ``_token`` cookie, and the auth manager validates it
    (``get_user_from_token``: signature, expiry, revocation). Never decoded here.
    """
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException

    try:
        return await get_user(request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))
    except HTTPException:  # none, expired, invalid, revoked
        return None


def may_see_plugins(user: Any) -> bool:
    """Whether the auth manager lets ``user`` see plugin views (what the UI's Plugins menu needs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    return get_auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user)


def refusal(request: Request) -> Response:
    """No session: a page request goes to Airflow's login (and back here after it), anything else gets 401."""
    from airflow.api_fastapi.app import get_auth_manager
    from fastapi.responses import PlainTextResponse, RedirectResponse

    wants_page = request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")
    if wants_page:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(get_auth_manager().get_url_login(next_url=here))
    return PlainTextResponse("Not authenticated: log in to the Airflow UI, or send 'Authorization: Bearer <token>' "
                             "with a token from POST /auth/token.\n", status_code=401,
                             headers={"WWW-Authenticate": "Bearer"})


def build_app() -> FastAPI:
    """The FastAPI app behind the UI links; every request needs an Airflow session and reads the settings afresh."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse

    app = FastAPI(title="stockops reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_airflow_session(request: Request, call_next) -> Response:
        # a middleware, not a route dependency, so that every route, the Data Docs' too, is behind it
        user = await session_user(request)
        if user is None:
            return refusal(request)
        if not may_see_plugins(user):
            return PlainTextResponse(f"{user.get_name()} may not see plugin views in Airflow.\n", status_code=403)
        request.state.stockops_user = user
        return await call_next(request)

    def not_found(message: str) -> PlainTextResponse:
        return PlainTextResponse(message + "\n", status_code=404)

    def dashboard_page(request: Request) -> HTMLResponse:
        from stockops.charts.dashboard import warm_up
        from stockops.reporting.dashboard.page import render_page
        from stockops.reporting.dashboard.table import CONTENT_SECURITY_POLICY

        user = request.state.stockops_user
        page = render_page(get_settings(), user=user.get_name(), approvals=approvals_for(user))
        warm_up()  # a ticker page is likely next: matplotlib imported in a thread, once per process
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    def ticker_page(request: Request) -> Response:
        from stockops.reporting.dashboard.page import render_ticker_page
        from stockops.reporting.dashboard.table import CONTENT_SECURITY_POLICY

        settings = get_settings()
        ticker = request.path_params["ticker"]
        page = render_ticker_page(settings, ticker, user=request.state.stockops_user.get_name())
        if page is None:
            return not_found(f"No ticker {ticker!r} on the watchlist: it has {len(settings.tickers)} "
                             "(STOCKOPS_TICKERS); the dashboard lists them all.")
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    # plain Starlette routes: they hand over the request without reading annotations, which are strings
    # here (FastAPI would look ``Request`` up among this module's globals, where it is not imported)
    app.add_route("/", dashboard_page, methods=["GET", "HEAD"])
    app.add_route("/ticker/{ticker}", ticker_page, methods=["GET", "HEAD"])

    @app.get("/mlflow")
    def mlflow() -> RedirectResponse:
        return RedirectResponse(get_settings().mlflow_ui_url)

    @app.get("/bentoml")
    def bentoml() -> RedirectResponse:
        return RedirectResponse(get_settings().serve_url + "/")

    @app.get("/monitor/latest")
    def monitor_report():
        settings = get_settings()
        decision = latest_monitor_report(settings)
        if decision is None:
            return not_found("No Evidently monitor report yet: stock_monitor has not kept one.")
        from stockops.monitoring.reports import read_report_file

        report = read_report_file(settings, decision["report"])  # this host's home, or the blob store
        if report is None:
            return not_found(f"The latest monitor report is missing or outside the stockops home: {decision['report']}")
        return HTMLResponse(report.decode("utf-8", errors="replace"))

    @app.get("/monitor/latest.json")
    def monitor_decision():
        decision = latest_monitor_report(get_settings())
        if decision is None:
            return not_found("No Evidently monitor report yet: stock_monitor has not kept one.")
        return JSONResponse(decision)

    @app.get("/dora")
    def dora_chart():
        settings = get_settings()
        chart = _file_under_home(settings.reports_dir / "dora.png", settings)
        return FileResponse(chart, media_type="image/png") if chart else not_found(DORA_MISSING)

    @app.get("/dora.json")
    def dora_numbers():
        settings = get_settings()
        numbers = _file_under_home(settings.reports_dir / "dora.json", settings)
        return FileResponse(numbers, media_type="application/json") if numbers else not_found(DORA_MISSING)

    def data_docs(request: Request) -> Response:
        # Pages of our own, drawn from the stored GX results (stockops.data.datadocs): GX's generated pages
        # load their scripts, styles and logo from other hosts and show no row offline.
        from stockops.data import datadocs

        settings = get_settings()
        page = request.path_params["page"]
        if page in ("", "index.html"):
            index = datadocs.render_index(settings, ticker=request.query_params.get("ticker"))
            if index is None:
                return not_found(DOCS_MISSING)
            return HTMLResponse(index, headers={"Content-Security-Policy": datadocs.CONTENT_SECURITY_POLICY})
        found = datadocs.result_file(settings, page)  # None for a path that resolves outside the results
        if found is None:
            return not_found(f"No such validation result: {page}" if datadocs.result_files(settings) else DOCS_MISSING)
        if page.endswith(".json"):
            return FileResponse(found, media_type="application/json")
        return HTMLResponse(datadocs.render_result(datadocs.read_result(settings, found)),
                            headers={"Content-Security-Policy": datadocs.CONTENT_SECURITY_POLICY})

    # "/gx" is redirected to "/gx/" (the router's redirect_slashes), so the pages' relative links hold
    app.add_route("/gx/{page:path}", data_docs, methods=["GET", "HEAD"])
    return app


def approvals_for(user: Any) -> list[dict] | str:
    """The human-in-the-loop requests still waiting in the DAGs ``user`` may read, or why they could not be read.

    Read from Airflow's metadata DB through its ORM, in the api-server process that serves the page:
    no HTTP call back into the api-server (which would hold a second worker, and needs the server's
    own address, which differs behind a proxy), and the user's DAG permissions come from the same
    auth manager the REST API asks.
    """
    from airflow.api_fastapi.app import get_auth_manager

    from stockops.orchestration.hitl import pending_approvals

    try:
        return pending_approvals(get_auth_manager().get_authorized_dag_ids(user=user))
    except Exception as exc:  # noqa: BLE001 - the rest of the page is still worth showing
        log.warning("stockops: could not read the pending approvals: %s: %s", type(exc).__name__, exc)
        return f"could not read the pending approvals: {type(exc).__name__}: {exc}"


class LazyApp:
    """An ASGI app that builds the real one on its first request.

    The scheduler and every task process import this plugin but never serve it; importing FastAPI
    there would cost ~0.2 s each time for nothing.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self.build = build
        self.app: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if self.app is None:
            self.app = self.build()
        await self.app(scope, receive, send)


# ---- the plugin --------------------------------------------------------------------------

_MENU = "StockOps"  # the UI lists these links under Plugins > StockOps


class StockopsPlugin(AirflowPlugin):
    name = "stockops"
    listeners = [DagRunRecorder()]
    fastapi_apps = [{"name": "stockops", "app": LazyApp(build_app), "url_prefix": URL_PREFIX}]
    # Without "url_route" the UI opens "href" in a new tab (MLflow refuses to be framed: X-Frame-Options);
    # with one it shows "href" in a frame at /plugin/<url_route>.
    external_views = [
        {"name": "MLflow", "href": f"{URL_PREFIX}/mlflow", "destination": "nav", "category": _MENU},
        {"name": "BentoML API", "href": f"{URL_PREFIX}/bentoml", "destination": "nav", "category": _MENU},
        {"name": "Monitor report (Evidently)", "href": f"{URL_PREFIX}/monitor/latest", "destination": "nav",
         "category": _MENU, "url_route": "stockops-monitor"},
        {"name": "Data Docs (GX)", "href": f"{URL_PREFIX}/gx/", "destination": "nav", "category": _MENU,
         "url_route": "stockops-data-docs"},
        {"name": "DORA report", "href": f"{URL_PREFIX}/dora", "destination": "nav", "category": _MENU,
         "url_route": "stockops-dora"},
    ]
