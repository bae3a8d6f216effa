"""Turn an LLM reply into clean interest phrases, whatever list format the model chose.

Accepted formats, tried in order: ``<interest>...</interest>`` tags (an unclosed tag ends at the
line end), a JSON array of strings, a numbered or bulleted list. Anything else is junk and yields
no phrases, so the caller can retry instead of storing an empty string.
"""

from __future__ import annotations

import json
import re

MAX_WORDS = 8  # longer "phrases" are copied product titles or rambling, not interests
CONNECTORS = frozenset("and by for in of on or the to with".split())  # cannot start or end one

_TAG = re.compile(r"<interest>(.*?)(?=</interest>|<interest>|\n|$)", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+(.+)$", re.MULTILINE)
_JSON_ARRAY = re.compile(r"\[.*\]", re.DOTALL)
_BRACKETED = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_STRAY_TAG = re.compile(r"</?\w*>|<[^<>]*$")  # "</item>", or a tag cut off by the token limit
_EDGE = " \t.,;:!?\"'`*_-\u201c\u201d\u2018\u2019"


def normalise(phrase: str) -> str:
    """Lower-case, drop bracketed asides and markdown, keep the most specific level of a path."""
    phrase = _BRACKETED.sub(" ", _STRAY_TAG.sub(" ", phrase).replace("**", " "))
    phrase = phrase.rsplit(">", 1)[-1]  # "Adhesives > Super Glue" -> "super glue"
    phrase = re.sub(r"^\s*\d{1,2}[.)]\s+", "", phrase)  # a list number left inside a tag
    return " ".join(phrase.split()).strip(_EDGE).lower()


def _candidates(text: str) -> list[str]:
    if "<interest>" in text.lower():
        return _TAG.findall(text)
    match = _JSON_ARRAY.search(text)
    if match:
        try:
            parsed = json.loads(match.group(0))
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
    return _LIST_ITEM.findall(text)


def parse_interests(
    text: str, limit: int | None, reject: frozenset[str] = frozenset()
) -> list[str]:
    """Distinct normalised phrases (at most ``limit``); ``reject`` drops echoes of the prompt."""
    out: list[str] = []
    for raw in _candidates(text):
        phrase = normalise(raw)
        words = phrase.split()
        if not any(c.isalpha() for c in phrase) or len(words) > MAX_WORDS:
            continue
        if words[0] in CONNECTORS or words[-1] in CONNECTORS:  # a fragment, cut off
            continue
        if phrase in reject or phrase in out:
            continue
        out.append(phrase)
        if len(out) == limit:
            break
    return out
