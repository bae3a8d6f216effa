"""The JSON API: recommendations for any history, catalogue search, health and visitor state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from demo.context import Demo, catalogue_item
from demo.errors import field_error
from demo.schemas import (
    MAX_ITEMS_LIMIT,
    MAX_OFFSET,
    HealthResponse,
    ItemsResponse,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
    VisitorState,
)

router = APIRouter(prefix="/api", tags=["api"])


def _demo(request: Request) -> Demo:
    return request.app.state.demo


def only_params(*names: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters other than ``names`` (``page=2`` must not be
    silently ignored)."""

    def check(request: Request) -> None:
        for name, value in request.query_params.items():
            if name not in names:
                allowed = ", ".join(names)
                raise field_error(("query", name), f"unknown parameter (use {allowed})", value)

    return check


@router.post("/recommend", response_model=RecommendResponse)
async def api_recommend(request: Request, body: RecommendRequest) -> RecommendResponse:
    """Rank items for a history (and interests) in the model's order; by default the items
    of the history itself are left out."""
    demo = _demo(request)
    for i, token in enumerate(body.history):
        if token not in demo.catalogue:
            raise field_error(("body", "history", i), f"unknown item id '{token}'", token)
    ranking = await demo.ranker.rank(
        body.history, body.interests or [], body.k, exclude_history=body.exclude_history
    )
    items = []
    for token, score in ranking.items:
        item = demo.catalogue.get(token)
        items.append(ScoredItem(id=token, title=item.title if item else token, score=score))
    return RecommendResponse(
        items=items,
        source=ranking.source,
        history_used=ranking.history_used,
        interests_used=ranking.interests_used,
        history_excluded=ranking.history_excluded,
    )


@router.get(
    "/items",
    response_model=ItemsResponse,
    dependencies=[Depends(only_params("q", "limit", "offset"))],
)
async def api_items(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Words of the title.")],
    limit: Annotated[int, Query(ge=1, le=MAX_ITEMS_LIMIT, description="Page size.")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> ItemsResponse:
    """Catalogue search, a page at a time: titles with the phrase first, then titles with
    every word; ``next_offset`` asks for the next page."""
    found = _demo(request).catalogue.search(q)
    page = found[offset : offset + limit]
    more = offset + limit < len(found)
    return ItemsResponse(
        query=q,
        total=len(found),
        offset=offset,
        limit=limit,
        next_offset=offset + limit if more else None,
        items=[catalogue_item(i) for i in page],
    )


@router.get("/health", response_model=HealthResponse)
async def api_health(request: Request) -> HealthResponse:
    """Up and serving; ``interests_ready`` turns true once the interest model has loaded."""
    demo = _demo(request)
    return HealthResponse(
        model=demo.run_name,
        dataset=demo.recommender.dataset,
        items=len(demo.catalogue),
        interests_backend=demo.worker.label,
        interests_ready=demo.worker.readiness == "ready",
        interests_status=demo.worker.readiness,
        uses_interests=demo.ranker.uses_interests,
        uptime_s=round(time.monotonic() - demo.started, 3),
    )


@router.get("/state", response_model=VisitorState)
async def api_state(request: Request) -> Response:
    """The calling visitor's history, interests and recommendations (the page polls this)."""
    demo = _demo(request)
    visitor = demo.visitor(request)
    state = demo.state_of(visitor, await demo.ranking_for(visitor))
    return JSONResponse(jsonable_encoder(state))
