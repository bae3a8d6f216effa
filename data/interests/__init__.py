"""User interests extracted from purchase histories: DashScope (Qwen), a local SmolLM2, or keywords.

``annotate_rows`` annotates a whole dataset (leak-free, cached, resumable); ``make_extractor``
gives one backend whose ``await extract(history_items)`` serves a single history (the web demo).
"""

from data.interests.base import InterestError
from data.interests.runner import annotate_rows, make_extractor

__all__ = ["InterestError", "annotate_rows", "make_extractor"]
