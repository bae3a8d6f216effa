"""The demo shop: server-rendered pages, a JSON API, per-visitor state and live interests.

    cd demo && python app.py [--run_dir=DIR] [--host=H] [--port=P] [--interests_backend=B]

Tests build the app with ``create_app`` from objects already in memory, without uvicorn. The
routes live in demo/pages.py and demo/api.py; this module wires them to the shared state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jinja2
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from fastapi_offline import FastAPIOffline
from starlette.middleware import Middleware

from demo import api, errors, pages
from demo.catalogue import ShopCatalogue
from demo.context import Demo
from demo.interests import ExtractorLike, InterestWorker, needs_warm_up
from demo.middleware import MAX_BODY_BYTES, BodyLimit, SecurityHeaders
from demo.ranking import Ranker, RecommenderLike
from demo.runs import find_latest_run
from demo.session import load_secret, session_middleware
from demo.state import StoreFull, TooManyNewVisitors, VisitorStore

HERE = Path(__file__).resolve().parent
WARM_UP_ITEMS = 5  # popular items whose text warms the interest model up at startup
log = logging.getLogger("demo")


def create_app(
    recommender: RecommenderLike,
    items: dict[str, dict],
    extractor: ExtractorLike,
    *,
    run_name: str = "",
    popularity: dict[str, int] | None = None,
    num_recommendations: int = 12,
    interests_timeout_s: float = 30.0,
    max_visitors: int = 10_000,
    model_threads: int = 1,
    min_idle_s: float = 3600.0,
    new_visitors_per_client: int = 20,
    max_body_bytes: int = MAX_BODY_BYTES,
    warm_up: bool | None = None,
    secret: str | None = None,
) -> FastAPI:
    """The whole demo around an already-loaded model, catalogue and interest extractor.

    ``popularity`` (item -> purchase count) orders what a visitor without history sees; by default
    it is counted from the train split of the model's dataset. ``warm_up`` (default: for a local
    model) loads the extractor at startup; ``/api/health`` says when it is ready.
    """
    if popularity is None:
        from data.popularity import train_counts

        popularity = train_counts(Path(recommender.data_folder), recommender.dataset)
    catalogue = ShopCatalogue(items, recommender.item_tokens, popularity)
    worker = InterestWorker(
        extractor,
        lambda t: {**items.get(t, {}), "item_id": t},
        interests_timeout_s,
        warm_up=needs_warm_up(extractor) if warm_up is None else warm_up,
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    demo = Demo(
        recommender=recommender,
        catalogue=catalogue,
        ranker=Ranker(recommender, catalogue, model_threads),
        store=VisitorStore(max_visitors, min_idle_s, new_visitors_per_client),
        worker=worker,
        templates=Jinja2Templates(env=env),
        run_name=run_name,
        num_recommendations=num_recommendations,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start([dict(items.get(t, {})) for t, _ in catalogue.popular[:WARM_UP_ITEMS]])
        ranker_warm_up = asyncio.create_task(demo.ranker.warm_up(), name="ranker-warm-up")
        yield
        ranker_warm_up.cancel()
        await worker.shutdown(demo.store.all())
        demo.ranker.close()

    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package, not a CDN
        title="Generative recommendation demo",
        summary="ETEGRec item tokenizer + T5 generator, conditioned on LLM-extracted interests.",
        version="1.0",
        lifespan=lifespan,
        middleware=[  # outermost first
            Middleware(SecurityHeaders),
            Middleware(BodyLimit, max_bytes=max_body_bytes),
            *session_middleware(secret or load_secret()),
        ],
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.demo = demo
    errors.install(app)
    app.add_exception_handler(TooManyNewVisitors, pages.on_too_many_new)
    app.add_exception_handler(StoreFull, pages.on_store_full)
    app.include_router(pages.router)
    app.include_router(api.router)
    return app


# -- entry point ----------------------------------------------------------------------------


def _host_port(cfg: Any, argv: list[str]) -> tuple[str, int]:
    """Command-line flags win, then GENREC_HOST / GENREC_PORT, then the config file."""
    from config import split_argv

    given = split_argv(argv)
    host = cfg.host if "host" in given else os.environ.get("GENREC_HOST", cfg.host)
    port = cfg.port if "port" in given else int(os.environ.get("GENREC_PORT", cfg.port))
    return host, port


def main(argv: list[str]) -> None:
    from config import ConfigError, load_config
    from data.interests.recipe import SETTINGS_FILE, read_settings
    from data.jsonl import DataError
    from data.paths import resolve
    from data.splits import load_items
    from demo.interests import make_demo_extractor, serving_backend

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config("demo", argv)
        host, port = _host_port(cfg, argv)
    except (ConfigError, ValueError) as err:
        sys.exit(f"error: {err}")
    unfinished: list[Path] = []
    if cfg.run_dir:
        run_dir: Path | None = resolve(cfg.run_dir)
    else:
        run_dir, unfinished = find_latest_run(resolve(cfg.runs_dir), cfg.dataset)
    if run_dir is None:
        waiting = (
            f" (not finished yet: {', '.join(p.name for p in unfinished)})" if unfinished else ""
        )
        sys.exit(
            f"error: no finished run of dataset '{cfg.dataset}' under "
            f"{resolve(cfg.runs_dir)}{waiting}.\n"
            f"Train one with `bash run.sh` (or `python train.py --dataset={cfg.dataset}`), "
            "or pass --run_dir=DIR."
        )
    from model import Recommender

    try:
        recommender = Recommender.load(run_dir)
        folder = Path(recommender.data_folder)
        items = load_items(folder, recommender.dataset)
        trained = read_settings(run_dir / SETTINGS_FILE)
        backend = serving_backend(cfg.interests_backend, trained)
        extractor = make_demo_extractor(backend, recommender.dataset, trained, folder)
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
        model_threads=cfg.model_threads,
    )
    log.info("model %s (%s), interests: %s", run_dir.name, recommender.dataset, extractor.label)
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
