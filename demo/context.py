"""What the page and API routes share, built once by ``create_app`` (``app.state.demo``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from demo.catalogue import Item, ShopCatalogue
from demo.interests import InterestWorker
from demo.ranking import Ranker, Ranking, RecommenderLike
from demo.schemas import CatalogueItem, RecCard, VisitorState
from demo.session import keep_sid, new_sid, session_sid
from demo.state import Visitor, VisitorStore


def catalogue_item(item: Item) -> CatalogueItem:
    return CatalogueItem(
        id=item.id, title=item.title, brand=item.brand, categories=list(item.categories)
    )


@dataclass
class Demo:
    recommender: RecommenderLike
    catalogue: ShopCatalogue
    ranker: Ranker
    store: VisitorStore
    worker: InterestWorker
    templates: Jinja2Templates
    run_name: str
    num_recommendations: int
    started: float = field(default_factory=time.monotonic)

    # -- visitors -------------------------------------------------------------------------

    def visitor(self, request: Request) -> Visitor:
        """The caller's stored state, or an empty one that is not stored (reads create nothing)."""
        return self.store.find(session_sid(request)) or Visitor("")

    def writable_visitor(self, request: Request) -> Visitor:
        """The caller's stored state, created on the first write (this issues the cookie).

        Raises state.TooManyNewVisitors / state.StoreFull (answered 429 / 503).
        """
        sid = session_sid(request)
        visitor = self.store.find(sid)
        if visitor is None:
            client = request.client.host if request.client else "unknown"
            visitor = self.store.create(sid or new_sid(), client)
        keep_sid(request, visitor.sid)
        return visitor

    # -- views ----------------------------------------------------------------------------

    async def ranking_for(self, visitor: Visitor) -> Ranking:
        """The visitor's recommendations (purchases left out), reused while history and
        interests are unchanged."""
        key = (tuple(visitor.history), tuple(visitor.interests))
        if visitor.ranking is not None and visitor.ranking[0] == key:
            return visitor.ranking[1]
        ranking = await self.ranker.rank(
            visitor.history, visitor.interests, self.num_recommendations
        )
        visitor.ranking = (key, ranking)
        return ranking

    def cards(self, ranking: Ranking) -> list[RecCard]:
        out = []
        for token, score in ranking.items:
            item = self.catalogue.items[token]
            out.append(
                RecCard(
                    id=token,
                    title=item.title,
                    brand=item.brand,
                    category=item.category,
                    hue=item.hue,
                    score=score,
                )
            )
        return out

    def state_of(self, visitor: Visitor, ranking: Ranking) -> VisitorState:
        return VisitorState(
            version=visitor.version,
            history=[catalogue_item(self.catalogue.items[t]) for t in visitor.history],
            interests=visitor.interests,
            interests_current=visitor.interests_version == visitor.version,
            status=visitor.status,
            notice=visitor.notice,
            backend=self.worker.label,
            source=ranking.source,
            interests_used=ranking.interests_used,
            recommendations=self.cards(ranking),
        )

    def page(
        self,
        request: Request,
        visitor: Visitor,
        name: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        context.update(
            visitor=visitor,
            backend=self.worker.label,
            uses_interests=self.ranker.uses_interests,
            query=context.get("query", ""),
        )
        return self.templates.TemplateResponse(
            request, name, context, status_code=status_code, headers=headers
        )

    def message(
        self,
        request: Request,
        status_code: int,
        heading: str,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """A short page for a refusal (unknown product, too many new visitors, shop full)."""
        return self.page(
            request,
            self.visitor(request),
            "message.html",
            status_code=status_code,
            headers=headers,
            heading=heading,
            text=text,
        )
