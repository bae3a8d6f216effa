"""The demo shop: server-rendered pages, a JSON API, per-visitor state and live interests.

    cd demo && python app.py [--run_dir=DIR] [--host=H] [--port=P] [--interests_backend=B]

Tests build the app with ``create_app`` from objects already in memory, without uvicorn.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python app.py` from demo/: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from demo.catalogue import Catalogue, Item
from demo.interests import Extractor, InterestWorker
from demo.ranking import Ranker, Ranking, RecommenderLike
from demo.schemas import (
    CatalogueItem,
    HealthResponse,
    ItemsResponse,
    RecCard,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    VisitorState,
)
from demo.session import COOKIE_NAME, CookieSigner, load_secret
from demo.state import Visitor, VisitorStore

HERE = Path(__file__).resolve().parent
COOKIE_MAX_AGE_S = 30 * 24 * 3600
log = logging.getLogger("demo")


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """``history.3: unknown item id '9999'; k: ...``: one readable line naming each field."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"body: {err.get('msg', 'invalid JSON')}")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _field_error(loc: tuple[str | int, ...], msg: str, value: Any) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def _catalogue_item(item: Item) -> CatalogueItem:
    return CatalogueItem(
        id=item.id, title=item.title, brand=item.brand, categories=list(item.categories)
    )


def create_app(
    recommender: RecommenderLike,
    items: dict[str, dict],
    extractor: Extractor,
    *,
    run_name: str = "",
    popularity: dict[str, int] | None = None,
    num_recommendations: int = 12,
    interests_timeout_s: float = 30.0,
    max_visitors: int = 10_000,
    secret: bytes | None = None,
) -> FastAPI:
    """The whole demo around an already-loaded model, catalogue and interest extractor.

    ``popularity`` (item -> purchase count) orders what a visitor without history sees; by default
    it is counted from the train split of the model's dataset.
    """
    if popularity is None:
        from demo.catalogue import popularity_from_train

        popularity = popularity_from_train(Path(recommender.data_folder), recommender.dataset)
    catalogue = Catalogue(items, recommender.item_tokens, popularity)
    ranker = Ranker(recommender, catalogue)
    store = VisitorStore(max_visitors)
    signer = CookieSigner(secret or load_secret())
    worker = InterestWorker(extractor, lambda t: dict(items.get(t, {})), interests_timeout_s)
    started = time.monotonic()

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates = Jinja2Templates(env=env)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await worker.shutdown(store.all())
        ranker.close()

    app = FastAPI(
        title="Generative recommendation demo",
        summary="ETEGRec item tokenizer + T5 generator, conditioned on LLM-extracted interests.",
        version="1.0",
        lifespan=lifespan,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.store = store
    app.state.worker = worker
    app.state.catalogue = catalogue
    app.state.ranker = ranker

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(
            status_code=422,
            content={"message": _validation_message(errors), "detail": jsonable_encoder(errors)},
        )

    # -- sessions ---------------------------------------------------------------------------

    def visitor_of(request: Request) -> Visitor:
        """The caller's state; a first visit gets a new signed id (cookie set by ``finish``)."""
        sid = signer.verify(request.cookies.get(COOKIE_NAME))
        if sid is None:
            sid, value = signer.new_value()
            request.state.new_cookie = value
        return store.get(sid)

    def finish(request: Request, response: Response) -> Response:
        value = getattr(request.state, "new_cookie", None)
        if value:
            response.set_cookie(
                COOKIE_NAME, value, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="lax"
            )
        return response

    # -- shared views -----------------------------------------------------------------------

    async def ranking_for(visitor: Visitor) -> Ranking:
        """The visitor's recommendations, reused while history and interests are unchanged."""
        key = (tuple(visitor.history), tuple(visitor.interests))
        if visitor.ranking is not None and visitor.ranking[0] == key:
            return visitor.ranking[1]
        ranking = await ranker.rank(visitor.history, visitor.interests, num_recommendations)
        visitor.ranking = (key, ranking)
        return ranking

    def scored(ranking: Ranking) -> list[ScoredItem]:
        out = []
        for token, score in ranking.items:
            item = catalogue.get(token)
            out.append(ScoredItem(id=token, title=item.title if item else token, score=score))
        return out

    def cards(ranking: Ranking, visitor: Visitor) -> list[RecCard]:
        bought = set(visitor.history)
        out = []
        for token, score in ranking.items:
            item = catalogue.items[token]
            out.append(
                RecCard(
                    id=token,
                    title=item.title,
                    brand=item.brand,
                    category=item.category,
                    hue=item.hue,
                    score=score,
                    bought=token in bought,
                )
            )
        return out

    def state_of(visitor: Visitor, ranking: Ranking) -> VisitorState:
        return VisitorState(
            version=visitor.version,
            history=[_catalogue_item(catalogue.items[t]) for t in visitor.history],
            interests=visitor.interests,
            interests_current=visitor.interests_version == visitor.version,
            status=visitor.status,
            notice=visitor.notice,
            backend=worker.label,
            source=ranking.source,
            interests_used=ranking.interests_used,
            recommendations=cards(ranking, visitor),
        )

    def page(
        request: Request, visitor: Visitor, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        context.update(
            visitor=visitor,
            backend=worker.label,
            uses_interests=ranker.uses_interests,
            query=context.get("query", ""),
        )
        return finish(
            request, templates.TemplateResponse(request, name, context, status_code=status_code)
        )

    # -- pages ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, added: str | None = None) -> Response:
        visitor = visitor_of(request)
        ranking = await ranking_for(visitor)
        return page(
            request,
            visitor,
            "home.html",
            state=state_of(visitor, ranking),
            added=catalogue.get(added) if added else None,
        )

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    async def search_page(request: Request, q: str = "") -> Response:
        visitor = visitor_of(request)
        query = q.strip()[:200]
        results = catalogue.search(query, limit=48) if query else []
        return page(request, visitor, "search.html", query=query, results=results)

    @app.get("/item/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    async def item_page(request: Request, item_id: str) -> Response:
        visitor = visitor_of(request)
        item = catalogue.get(item_id)
        if item is None:
            return page(request, visitor, "not_found.html", status_code=404, what=item_id)
        return page(
            request, visitor, "item.html", item=item, times_bought=visitor.history.count(item_id)
        )

    @app.post("/buy/{item_id}", include_in_schema=False)
    async def buy(request: Request, item_id: str) -> Response:
        """Returns at once: interests are extracted in the background."""
        visitor = visitor_of(request)
        if item_id not in catalogue:
            return page(request, visitor, "not_found.html", status_code=404, what=item_id)
        visitor.add(item_id)
        worker.schedule(visitor)
        return finish(
            request, RedirectResponse(f"/?{urlencode({'added': item_id})}", status_code=303)
        )

    @app.get("/history", response_class=HTMLResponse, include_in_schema=False)
    async def history_page(request: Request) -> Response:
        visitor = visitor_of(request)
        purchases = [(pos, catalogue.items[t]) for pos, t in enumerate(visitor.history)]
        return page(request, visitor, "history.html", purchases=list(reversed(purchases)))

    @app.post("/history/remove/{pos}", include_in_schema=False)
    async def remove(request: Request, pos: int) -> Response:
        visitor = visitor_of(request)
        try:
            visitor.remove_at(pos)
        except IndexError:
            pass  # already gone (e.g. a double click): nothing to change
        else:
            worker.schedule(visitor)
        return finish(request, RedirectResponse("/history", status_code=303))

    @app.post("/history/clear", include_in_schema=False)
    async def clear(request: Request) -> Response:
        visitor = visitor_of(request)
        if visitor.history:
            visitor.clear()
            worker.schedule(visitor)
        return finish(request, RedirectResponse("/history", status_code=303))

    # -- JSON API ---------------------------------------------------------------------------

    @app.post("/api/recommend", response_model=RecommendResponse, tags=["api"])
    async def api_recommend(body: RecommendRequest) -> RecommendResponse:
        """Rank items for a history (and interests), exactly in the model's order."""
        for i, token in enumerate(body.history):
            if token not in catalogue:
                raise _field_error(("body", "history", i), f"unknown item id '{token}'", token)
        ranking = await ranker.rank(body.history, body.interests or [], body.k)
        return RecommendResponse(
            items=scored(ranking),
            source=ranking.source,
            history_used=ranking.history_used,
            interests_used=ranking.interests_used,
        )

    @app.get("/api/items", response_model=ItemsResponse, tags=["api"])
    async def api_items(
        q: Annotated[str, Query(min_length=1, max_length=200, description="Words of the title.")],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ItemsResponse:
        """Catalogue search: titles with the phrase first, then titles with every word."""
        found = catalogue.search(q, limit=limit)
        return ItemsResponse(query=q, items=[_catalogue_item(i) for i in found])

    @app.get("/api/health", response_model=HealthResponse, tags=["api"])
    async def api_health() -> HealthResponse:
        return HealthResponse(
            model=run_name,
            dataset=recommender.dataset,
            items=len(catalogue),
            interests_backend=worker.label,
            uses_interests=ranker.uses_interests,
            uptime_s=round(time.monotonic() - started, 3),
        )

    @app.get("/api/state", response_model=VisitorState, tags=["api"])
    async def api_state(request: Request) -> Response:
        """The calling visitor's history, interests and recommendations (the page polls this)."""
        visitor = visitor_of(request)
        state = state_of(visitor, await ranking_for(visitor))
        return finish(request, JSONResponse(jsonable_encoder(state)))

    return app


# -- entry point ----------------------------------------------------------------------------


def find_latest_run(runs_dir: Path, dataset: str) -> Path | None:
    """The newest folder under ``runs_dir`` whose config.yaml names ``dataset`` and has a model."""
    import yaml

    if not runs_dir.is_dir():
        return None
    best: tuple[float, Path] | None = None
    for cfg_path in runs_dir.glob("*/config.yaml"):
        try:
            cfg = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(cfg, dict) or cfg.get("dataset") != dataset:
            continue
        stamp = cfg_path.stat().st_mtime
        if best is None or stamp > best[0]:
            best = (stamp, cfg_path.parent)
    return best[1] if best else None


def _host_port(cfg: Any, argv: list[str]) -> tuple[str, int]:
    """Command-line flags win, then GENREC_HOST / GENREC_PORT, then the config file."""
    from config import split_argv

    given = split_argv(argv)
    host = cfg.host if "host" in given else os.environ.get("GENREC_HOST", cfg.host)
    port = cfg.port if "port" in given else int(os.environ.get("GENREC_PORT", cfg.port))
    return host, port


def main(argv: list[str]) -> None:
    from config import ConfigError, load_config
    from data.jsonl import DataError
    from data.paths import resolve
    from data.splits import load_items
    from demo.interests import choose_backend, make_demo_extractor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config("demo", argv)
        host, port = _host_port(cfg, argv)
        backend = choose_backend(cfg.interests_backend)
    except (ConfigError, ValueError) as err:
        sys.exit(f"error: {err}")
    run_dir = (
        resolve(cfg.run_dir) if cfg.run_dir else find_latest_run(resolve(cfg.runs_dir), cfg.dataset)
    )
    if run_dir is None:
        sys.exit(
            f"error: no trained run of dataset '{cfg.dataset}' under {resolve(cfg.runs_dir)}.\n"
            f"Train one with `bash run.sh` (or `python train.py --dataset={cfg.dataset}`), "
            "or pass --run_dir=DIR."
        )
    from model import Recommender

    try:
        recommender = Recommender.load(run_dir)
        items = load_items(Path(recommender.data_folder), recommender.dataset)
        extractor = make_demo_extractor(backend, recommender.dataset)
    except (DataError, OSError, RuntimeError, ValueError) as err:
        sys.exit(f"error: cannot load {run_dir}: {err}")
    app = create_app(
        recommender,
        items,
        extractor,
        run_name=run_dir.name,
        num_recommendations=cfg.num_recommendations,
        interests_timeout_s=cfg.interests_timeout_s,
        max_visitors=cfg.max_visitors,
    )
    log.info("model %s (%s), interests: %s", run_dir.name, recommender.dataset, extractor.label)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
