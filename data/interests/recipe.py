"""The ``items`` recipe: fresh LLM interests at every purchase for one prompt per item.

Prompting once per history prefix costs one prompt per row (43,945 on amazon18, over 260,000 on
amazon23), which forced a stride, and stale interests erased the gain. Here the LLM reads each
item once and names the interests that item speaks to. A row's interests are then composed from
its own history's item phrases, exactly as the keyword backend composes item terms
(``keywords.rank``: the latest item counts most, each older one ``DECAY`` times less, so what
recurs and what is recent rises). Every row is fresh, no row sees an item outside its history,
and near-duplicate phrases of different items ("microscope slide", "microscope slides") are
merged by their sentence embeddings first, so frequency adds up across wordings.

``compose`` is the one composition: data_process uses it on every row, the demo on a visitor's
history (``ItemRecipe``), so training and serving agree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from data.interests.base import InterestError, LLMExtractor
from data.interests.keywords import rank

RECIPES = ("items", "history")
SETTINGS_FILE = "interests.json"  # in a run folder: how its interests were made
INTERESTS_SUMMARY = "interests_summary.json"  # in a dataset folder: the run's counts + settings
SETTINGS_KEYS = (
    "backend",
    "recipe",
    "num_interests",
    "max_items",
    "max_prompt_tokens",
    "item_interests",
    "merge_threshold",
    "stride",
)
ITEM_PHRASE_WEIGHT = 1.0  # each of an item's phrases, before recency
Encode = Callable[[list[str]], np.ndarray]  # phrases -> L2-normalised rows


def item_config(icfg):
    """The interest settings of a one-item prompt: ``item_interests`` phrases asked, a reply with
    ``item_min_phrases`` of them accepted (the composition adds up phrases over a history's
    items, so retrying for the rest is not worth its cost), ``item_max_new_tokens`` to write."""
    from config import Config

    return Config(
        {
            **icfg,
            "num_interests": int(icfg.item_interests),
            "min_phrases": int(icfg.item_min_phrases),
            "local_max_new_tokens": int(icfg.item_max_new_tokens),
        }
    )


def merge_map(item_phrases: Mapping[str, list[str]], encode: Encode | None, threshold: float):
    """Phrase -> the phrase it is merged into. Phrases are visited most frequent first (ties:
    alphabetical); each joins the first kept phrase whose cosine similarity reaches ``threshold``,
    else it is kept. Without ``encode`` only identical strings merge."""
    counts = Counter(p for phrases in item_phrases.values() for p in dict.fromkeys(phrases))
    order = sorted(counts, key=lambda p: (-counts[p], p))
    if encode is None or not order:
        return {p: p for p in order}
    vectors = np.asarray(encode(order), dtype=np.float32)
    kept = np.zeros((len(order), vectors.shape[1]), dtype=np.float32)
    kept_names: list[str] = []
    target: dict[str, str] = {}
    for phrase, vec in zip(order, vectors, strict=True):
        if kept_names:
            sims = kept[: len(kept_names)] @ vec
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                target[phrase] = kept_names[best]
                continue
        kept[len(kept_names)] = vec
        kept_names.append(phrase)
        target[phrase] = phrase
    return target


def canonical(item_phrases: Mapping[str, list[str]], merged: Mapping[str, str]):
    """Each item's phrases under their merged names, order kept, repeats dropped."""
    return {
        item: list(dict.fromkeys(merged.get(p, p) for p in phrases))
        for item, phrases in item_phrases.items()
    }


def compose(history_phrases: Iterable[list[str]], limit: int) -> list[str]:
    """A history's interests from its items' phrases, oldest item first (``keywords.rank``)."""
    return rank(({p: ITEM_PHRASE_WEIGHT for p in phrases} for phrases in history_phrases), limit)


def item_table_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.item_interests.json"


def write_item_table(folder: Path, name: str, table: Mapping[str, list[str]]) -> Path:
    """``<name>.item_interests.json``: every item's merged phrases, which the demo composes from
    without asking the LLM again (how they were made: ``interests_summary.json``)."""
    path = item_table_path(folder, name)
    path.write_text(json.dumps({"items": table}, ensure_ascii=False, indent=0))
    return path


def read_item_table(folder: Path, name: str) -> dict[str, list[str]]:
    path = item_table_path(folder, name)
    try:
        return dict(json.loads(path.read_text())["items"])
    except FileNotFoundError:
        raise InterestError(
            f"{path}: not found (run data_process.py with --interests.recipe=items)"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise InterestError(f"{path}: not an item-interest table ({err})") from None


def interest_settings(icfg, text_model: str, model: str) -> dict:
    """What a dataset's interests were made with (``model``: the LLM that answered, as the
    summary names it); training copies it into the run folder (``interests.json``), and the demo
    and ``Recommender`` serve with the same settings."""
    return {k: icfg[k] for k in SETTINGS_KEYS} | {"model": model, "text_model": text_model}


def read_settings(path: Path) -> dict | None:
    """The settings in ``path`` (a run's ``interests.json`` or a dataset's summary), or None
    for data and runs made before they were recorded."""
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
    except ValueError as err:
        raise InterestError(f"{path}: not valid JSON ({err})") from None
    found = found.get("settings", found) if isinstance(found, dict) else None
    if not isinstance(found, dict):
        raise InterestError(f"{path}: expected an object of interest settings")
    return found


class ItemRecipe:
    """One history's fresh interests for the demo: known items from the table data_process wrote,
    an item it never saw asked once (then remembered), composed like every training row."""

    def __init__(
        self,
        table: Mapping[str, list[str]],
        item_extractor: LLMExtractor | None,
        num_interests: int,
        max_items: int,
    ) -> None:
        self.table = dict(table)
        self.item_extractor = item_extractor
        self.num_interests = num_interests
        self.max_items = max_items
        asked = item_extractor.label if item_extractor else "table only"
        self.label = f"items:{asked}"

    async def _phrases(self, item: dict) -> list[str]:
        token = str(item.get("item_id", ""))
        if token in self.table:
            return self.table[token]
        if self.item_extractor is None:
            return []
        try:
            found = await self.item_extractor.extract([item])
        except InterestError:
            found = []
        if token:
            self.table[token] = found
        return found

    async def extract(self, history_items: list[dict]) -> list[str]:
        recent = history_items[-self.max_items :] if self.max_items > 0 else []
        found = compose([await self._phrases(item) for item in recent], self.num_interests)
        if not found:
            raise InterestError("no interests for any item of the history")
        return found

    async def aclose(self) -> None:
        if self.item_extractor is not None:
            await self.item_extractor.aclose()
