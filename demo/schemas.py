"""Request and response models of the JSON API (they also document it on /docs).

The limits here are the demo's limits everywhere: interests from an LLM are held to the same
phrase length and count as interests sent to the API (demo.interests.clean_phrases).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
)

MAX_HISTORY = 1000
MAX_INTERESTS = 20
MAX_INTEREST_CHARS = 200
MAX_K = 100
MAX_ITEMS_LIMIT = 100
MAX_OFFSET = 100_000


def _not_blank(phrase: str) -> str:
    """Strip the phrase; one of only spaces says nothing, so it is an error, not an interest."""
    phrase = phrase.strip()
    if not phrase:
        raise ValueError("must not be blank")
    return phrase


ItemId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
Interest = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_INTEREST_CHARS),
    AfterValidator(_not_blank),
]


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
        description="Interest phrases (not blank; surrounding spaces are dropped); null or [] "
        "for none. The model reads the first few (interests_used); a model without interests "
        "ignores them.",
    )
    k: StrictInt = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_history: StrictBool = Field(
        default=True,
        description="Leave out items already in the history (a shop does not offer back what "
        "was just bought); the rest keep the model's order.",
    )


class ScoredItem(BaseModel):
    id: str
    title: str
    score: float = Field(
        description="Model score, higher first (the codes' log-probability; a run with an item "
        "head ranking by both adds the item head's, weighted), or purchase count if popular."
    )


class RecommendResponse(BaseModel):
    items: list[ScoredItem] = Field(description="Best first, exactly in the model's order.")
    source: Literal["model", "popular"]
    history_used: list[str] = Field(description="The most recent items the model saw.")
    interests_used: list[str]
    history_excluded: bool = Field(description="True when items of the history were left out.")


class CatalogueItem(BaseModel):
    id: str
    title: str
    brand: str
    categories: list[str]


class ItemsResponse(BaseModel):
    query: str
    total: int = Field(description="How many items match in all.")
    offset: int
    limit: int
    next_offset: int | None = Field(description="``offset`` of the next page; null on the last.")
    items: list[CatalogueItem]


class HealthResponse(BaseModel):
    model: str = Field(description="Name of the run folder the model was loaded from.")
    dataset: str
    items: int
    interests_backend: str
    interests_ready: bool = Field(
        description="False while the interest model is still loading at startup; extractions "
        "asked for meanwhile wait for it (their pages show 'pending')."
    )
    interests_status: Literal["loading", "ready", "failed"]
    uses_interests: bool
    uptime_s: float


class RecCard(BaseModel):
    """One recommendation as the page draws it (never an item already in the history)."""

    id: str
    title: str
    brand: str
    category: str
    hue: int
    score: float


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
    recommendations: list[RecCard] = Field(description="Purchased items are left out.")
