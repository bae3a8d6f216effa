"""The shop's HTML pages: home, search, product, purchase and history.

Every change is a POST answered by a 303 redirect (post/redirect/get), so a reload never
repeats it; the "Added ..." banner is a one-shot message kept with the visitor.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from demo.context import Demo
from demo.schemas import MAX_OFFSET
from demo.state import StoreFull, TooManyNewVisitors

SEARCH_PAGE = 48
router = APIRouter(include_in_schema=False)


def _demo(request: Request) -> Demo:
    return request.app.state.demo


def _unknown(demo: Demo, request: Request, item_id: str) -> Response:
    shown = item_id if len(item_id) <= 80 else item_id[:79] + "…"
    return demo.message(request, 404, "Not found", f"There is no product “{shown}”.")


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    demo = _demo(request)
    visitor = demo.visitor(request)
    ranking = await demo.ranking_for(visitor)
    added = visitor.pop_flash()
    return demo.page(
        request,
        visitor,
        "home.html",
        state=demo.state_of(visitor, ranking),
        added=demo.catalogue.get(added) if added else None,
    )


@router.get("/search", response_class=HTMLResponse)
async def search_page(
    request: Request, q: str = "", offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0
) -> Response:
    demo = _demo(request)
    query = q.strip()[:200]
    found = demo.catalogue.search(query) if query else []
    return demo.page(
        request,
        demo.visitor(request),
        "search.html",
        query=query,
        results=found[offset : offset + SEARCH_PAGE],
        total=len(found),
        offset=offset,
        page_size=SEARCH_PAGE,
    )


@router.get("/item/{item_id}", response_class=HTMLResponse)
async def item_page(request: Request, item_id: str) -> Response:
    demo = _demo(request)
    item = demo.catalogue.get(item_id)
    if item is None:
        return _unknown(demo, request, item_id)
    visitor = demo.visitor(request)
    times = visitor.history.count(item_id)
    return demo.page(request, visitor, "item.html", item=item, times_bought=times)


@router.post("/buy/{item_id}")
async def buy(request: Request, item_id: str) -> Response:
    """Returns at once: interests are extracted in the background."""
    demo = _demo(request)
    if item_id not in demo.catalogue:
        return _unknown(demo, request, item_id)
    visitor = demo.writable_visitor(request)
    visitor.add(item_id)
    visitor.flash = item_id
    demo.worker.schedule(visitor)
    return RedirectResponse("/", status_code=303)


@router.get("/history", response_class=HTMLResponse)
async def history_page(request: Request) -> Response:
    """One row per product, most recently bought first, with how many times it was bought."""
    demo = _demo(request)
    visitor = demo.visitor(request)
    counts = Counter(visitor.history)
    latest_first = list(dict.fromkeys(reversed(visitor.history)))
    rows = [(demo.catalogue.items[t], counts[t]) for t in latest_first]
    return demo.page(request, visitor, "history.html", purchases=rows)


@router.post("/history/remove/{item_id}")
async def remove(request: Request, item_id: str) -> Response:
    """Removes the product by id: a double click or a stale page cannot hit another item."""
    demo = _demo(request)
    visitor = demo.visitor(request)
    if visitor.remove(item_id):
        demo.worker.schedule(visitor)
    return RedirectResponse("/history", status_code=303)


@router.post("/history/clear")
async def clear(request: Request) -> Response:
    demo = _demo(request)
    visitor = demo.visitor(request)
    if visitor.history:
        visitor.clear()
        demo.worker.schedule(visitor)
    return RedirectResponse("/history", status_code=303)


async def on_too_many_new(request: Request, exc: TooManyNewVisitors) -> Response:
    minutes = max(1, round(exc.retry_after_s / 60))
    return _demo(request).message(
        request,
        429,
        "Too many new visitors",
        f"Too many new visitors from your address; try again in about {minutes} min.",
        {"Retry-After": str(max(1, round(exc.retry_after_s)))},
    )


async def on_store_full(request: Request, exc: StoreFull) -> Response:
    return _demo(request).message(
        request,
        503,
        "The shop is full",
        "The shop is serving as many visitors as it can; try again in a few minutes.",
        {"Retry-After": "300"},
    )
