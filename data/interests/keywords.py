"""The no-LLM backend: interest phrases ranked from the history's own metadata, deterministically.

Candidates per item: its most specific category (and, weaker, the level above), its brand, and
content bigrams of its title. An item's candidates are weighted by recency (the latest item counts
most, each older one ``DECAY`` times less) and summed over the history, so what recurs and what
is recent rises. Ties break alphabetically, so the same history always gives the same phrases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from config import Config
from data.interests.base import InterestError

DECAY = 0.8
LEAF_WEIGHT, PARENT_WEIGHT, BRAND_WEIGHT, BIGRAM_WEIGHT = 1.0, 0.5, 0.6, 0.4
LEGAL_SUFFIXES = frozenset("inc co corp corporation company llc ltd limited gmbh".split())
NO_BRAND = frozenset({"", "unknown", "generic", "n/a", "na", "none", "unbranded"})
STOPWORDS = frozenset(
    """a an and are as at by for from in into is of on or per the to with without pack packs
    count ct set sets piece pieces pcs pc size sizes inch inches ft feet foot mm cm ml oz lb lbs
    gal gallon gallons quart liter litre kit assorted various new premium quality professional
    heavy duty case box bag bags color colors black white blue red green yellow clear grey gray
    small medium large extra x xl pk dia length width height thick long wide high""".split()
)
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")
_SPLIT = re.compile(r"[\s,;:()\[\]{}|/+&]+")

Terms = dict[str, float]


def item_terms(item: dict) -> Terms:
    """Candidate phrases of one item with their base weights (a product's own signal)."""
    terms: Terms = {}
    cats = [" ".join(c.split()).lower() for c in item.get("categories") or [] if c.strip()]
    specific = cats[1:] or cats  # the first level is the whole catalogue
    if specific:
        terms[specific[-1]] = LEAF_WEIGHT
    if len(specific) > 1:
        terms.setdefault(specific[-2], PARENT_WEIGHT)
    brand = brand_name(str(item.get("brand") or ""))
    if brand not in NO_BRAND:
        terms.setdefault(f"{brand} products", BRAND_WEIGHT)
    skip = STOPWORDS | set(brand.split())
    tokens = [t.strip(".!?\"'-") for t in _SPLIT.split(str(item.get("title") or "").lower())]
    for left, right in zip(tokens, tokens[1:], strict=False):
        if _is_word(left, skip) and _is_word(right, skip) and left != right:
            terms.setdefault(f"{left} {right}", BIGRAM_WEIGHT)
    return terms


def brand_name(raw: str) -> str:
    """``"Sealed Unit Parts Co., Inc."`` -> ``"sealed unit parts"``: legal suffixes say nothing."""
    words = re.sub(r"[^\w&' -]+", " ", raw.lower()).split()
    while words and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


def _is_word(token: str, skip: frozenset[str]) -> bool:
    """A content word: letters only (model numbers and sizes break a bigram), not a stopword."""
    return len(token) > 1 and token not in skip and _WORD.fullmatch(token) is not None


def rank(history_terms: Iterable[Terms], limit: int) -> list[str]:
    """Top ``limit`` phrases of a history, oldest item first; none repeats a chosen one."""
    scores: dict[str, float] = {}
    per_item = list(history_terms)
    for age, terms in enumerate(reversed(per_item)):
        weight = DECAY**age
        for phrase, base in terms.items():
            scores[phrase] = scores.get(phrase, 0.0) + base * weight
    chosen: list[str] = []
    for phrase, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        words = set(phrase.split())
        if any(words <= set(c.split()) or words >= set(c.split()) for c in chosen):
            continue
        chosen.append(phrase)
        if len(chosen) == limit:
            break
    return chosen


class KeywordExtractor:
    """Same interface as the LLM backends, at a tiny fraction of the cost."""

    label = "keywords"

    def __init__(self, icfg: Config) -> None:
        self.num_interests = int(icfg.num_interests)
        self.max_items = int(icfg.max_items)

    def phrases(self, history_items: list[dict]) -> list[str]:
        recent = history_items[-self.max_items :] if self.max_items > 0 else []
        return rank((item_terms(item) for item in recent), self.num_interests)

    async def extract(self, history_items: list[dict]) -> list[str]:
        found = self.phrases(history_items)
        if not found:
            raise InterestError("no category, brand or title words in the history")
        return found

    async def aclose(self) -> None:
        """Nothing to release; present so callers treat every backend alike."""
