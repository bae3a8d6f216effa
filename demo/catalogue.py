"""The shop's items: display text, title search and the popularity list for new visitors."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_WORD = re.compile(r"[\w][\w'.-]*", re.UNICODE)


@dataclass(frozen=True)
class Item:
    """What the pages show of one item (text fields may be empty in the raw data)."""

    id: str
    title: str
    brand: str
    categories: tuple[str, ...]
    description: str
    features: tuple[str, ...]

    @property
    def category(self) -> str:
        """The most specific category (the catalogue lists them root first)."""
        return self.categories[-1] if self.categories else ""

    @property
    def hue(self) -> int:
        """A stable colour per department, so the placeholder images group related items."""
        key = self.categories[1] if len(self.categories) > 1 else self.category or self.id
        return zlib.crc32(key.encode()) % 360


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v)
    return str(value).strip()


def _as_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(v) for v in value if str(v).strip())
    return (str(value),) if value else ()


class ShopCatalogue:
    """Items the model can recommend, with their text, a word index and the popularity order."""

    def __init__(
        self,
        raw: Mapping[str, Mapping],
        known: Iterable[str],
        popularity: Mapping[str, int] | None = None,
    ) -> None:
        self.items: dict[str, Item] = {}
        for token in known:
            meta = raw.get(token, {})
            self.items[token] = Item(
                id=token,
                title=_text(meta.get("title")) or f"Item {token}",
                brand=_text(meta.get("brand")),
                categories=_as_tuple(meta.get("categories")),
                description=_text(meta.get("description")),
                features=_as_tuple(meta.get("features")),
            )
        self._order = {token: i for i, token in enumerate(self.items)}
        self._titles = {t: item.title.lower() for t, item in self.items.items()}
        self._words = {t: set(_WORD.findall(title)) for t, title in self._titles.items()}
        counts = popularity or {}
        self.popular: list[tuple[str, int]] = sorted(
            ((t, int(counts.get(t, 0))) for t in self.items),
            key=lambda tc: (-tc[1], self._order[tc[0]]),
        )

    def __contains__(self, token: object) -> bool:
        return token in self.items

    def __len__(self) -> int:
        return len(self.items)

    def get(self, token: str) -> Item | None:
        return self.items.get(token)

    def search(self, query: str) -> list[Item]:
        """Every match, titles containing the query as a phrase first, then titles containing
        all its words (callers page through the list; ``len`` is the total).

        Each query word must appear in the title as a whole word or as a substring of a word
        (``"pipet"`` finds "Pipettes"); ties keep catalogue order, so pages are stable.
        """
        phrase = " ".join(query.lower().split())
        words = _WORD.findall(phrase)
        if not phrase:
            return []
        exact: list[str] = []
        loose: list[str] = []
        for token, title in self._titles.items():
            if phrase in title:
                exact.append(token)
            elif words and all(
                w in self._words[token] or any(w in tw for tw in self._words[token]) for w in words
            ):
                loose.append(token)
        return [self.items[t] for t in exact + loose]
