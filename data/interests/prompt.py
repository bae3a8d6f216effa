"""The interest prompt: built only from the history items' own metadata, most recent items kept.

Token counts are approximated by whitespace-separated words (about 1.3 model tokens each for
English product text); the budget is a cost knob, not an exact context limit.
"""

from __future__ import annotations

import hashlib
import json

DETAIL_WORDS = 15  # words of features/description per item: enough to say what a product is

# One worked example from a domain absent from the catalogue, so an echo of it is detectable
# (the parser rejects these phrases) and never mistaken for a real interest.
EXAMPLE_ITEMS = (
    "- Hario V60 Ceramic Coffee Dripper, Size 02 (Coffee > Pour-Over)\n"
    "- Baratza Encore Conical Burr Coffee Grinder (Coffee > Grinders)\n"
    "- Bonavita Gooseneck Electric Kettle, 1.0 L (Kitchen > Kettles)"
)
EXAMPLE_INTERESTS = (
    "pour-over coffee",
    "burr coffee grinders",
    "gooseneck kettles",
    "specialty coffee",
    "home barista gear",
)

Messages = list[dict[str, str]]


def item_line(item: dict) -> str:
    """One bullet: title, the two most specific category levels, a few words of detail."""
    title = " ".join(str(item.get("title") or "").split())
    cats = [c for c in item.get("categories") or [] if c][1:][-2:]
    parts = [title] if title else []
    if cats:
        parts.append(f"({' > '.join(cats)})")
    if not parts:
        return ""
    head = " ".join(parts)
    detail = " ".join(item.get("features") or []) or str(item.get("description") or "")
    words = detail.split()[:DETAIL_WORDS]
    return f"- {head}: {' '.join(words)}" if words else f"- {head}"


def item_block(history_items: list[dict], max_prompt_tokens: int, max_items: int) -> str:
    """Item lines, oldest first, of the most recent items that fit the budget (at least one)."""
    lines: list[str] = []
    used = 0
    for item in reversed(history_items[-max_items:] if max_items > 0 else []):
        line = item_line(item)
        if not line:
            continue
        words = len(line.split())
        if used + words > max_prompt_tokens:
            if not lines:  # the most recent item alone is over budget: keep its first words
                lines.append(" ".join(line.split()[:max_prompt_tokens]))
            break
        lines.append(line)
        used += words
    return "\n".join(reversed(lines))


def _ask(block: str, num_interests: int) -> str:
    return f"Products bought, oldest first:\n{block}\nList {num_interests} interests."


def build_messages(
    history_items: list[dict], num_interests: int, max_prompt_tokens: int, max_items: int
) -> Messages:
    """Chat messages asking for ``num_interests`` phrases in tags; empty if no item has text."""
    block = item_block(history_items, max_prompt_tokens, max_items)
    if not block:
        return []
    system = (
        "You list a shopper's interests. Read the products they bought and answer with exactly "
        f"{num_interests} specific English interest phrases (2 to 4 words each), each inside "
        "<interest></interest> tags, one per line, and nothing else."
    )
    example = "\n".join(f"<interest>{p}</interest>" for p in EXAMPLE_INTERESTS[:num_interests])
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _ask(EXAMPLE_ITEMS, num_interests)},
        {"role": "assistant", "content": example},
        {"role": "user", "content": _ask(block, num_interests)},
    ]


def prompt_chars(messages: Messages) -> int:
    """A prompt's length in characters: a cheap stand-in for its token count when ordering."""
    return sum(len(m["content"]) for m in messages)


def prompt_key(backend: str, model: str, messages: Messages) -> str:
    """Cache key: the same prompt to the same model is computed once, across runs."""
    text = json.dumps([backend, model, messages], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
