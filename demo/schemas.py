"""Request and response models of the JSON API (they also document it on /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

MAX_HISTORY = 1000
MAX_INTERESTS = 20
MAX_INTEREST_CHARS = 200
MAX_K = 100

ItemId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
Interest = Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_INTEREST_CHARS)]


class RecommendRequest(BaseModel):
    """A purchase history (oldest first) and optional interest phrases."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"history": ["0", "1", "2"], "interests": ["lab glassware"], "k": 10}]
        },
    )

    history: list[ItemId] = Field(
        max_length=MAX_HISTORY,
        description="Item ids, oldest first. Longer than the model's maximum: the most recent "
        "items are kept. Empty: the most popular items are returned.",
    )
    interests: list[Interest] | None = Field(
        default=None,
        max_length=MAX_INTERESTS,
        description="Interest phrases; null or [] for none. Ignored by a model without interests.",
    )
    k: StrictInt = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")


class ScoredItem(BaseModel):
    id: str
    title: str
    score: float = Field(description="Model score (log-probability), or purchase count if popular.")


class RecommendResponse(BaseModel):
    items: list[ScoredItem] = Field(description="Best first, exactly in the model's order.")
    source: Literal["model", "popular"]
    history_used: list[str] = Field(description="The most recent items the model saw.")
    interests_used: list[str]


class CatalogueItem(BaseModel):
    id: str
    title: str
    brand: str
    categories: list[str]


class ItemsResponse(BaseModel):
    query: str
    items: list[CatalogueItem]


class HealthResponse(BaseModel):
    model: str = Field(description="Name of the run folder the model was loaded from.")
    dataset: str
    items: int
    interests_backend: str
    uses_interests: bool
    uptime_s: float


class RecCard(BaseModel):
    """One recommendation as the page draws it."""

    id: str
    title: str
    brand: str
    category: str
    hue: int
    score: float
    bought: bool = Field(description="Already in the visitor's history.")


class VisitorState(BaseModel):
    """What the page shows for the calling visitor; polled while interests are pending."""

    version: int = Field(description="Bumped by every change of history.")
    history: list[CatalogueItem]
    interests: list[str] = Field(description="Last known interests (may be for an older history).")
    interests_current: bool = Field(description="True when the interests match the history.")
    status: Literal["idle", "pending", "ready", "failed"]
    notice: str | None
    backend: str
    source: Literal["model", "popular"]
    interests_used: list[str] = Field(description="The interests the recommendations used.")
    recommendations: list[RecCard]
