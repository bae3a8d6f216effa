"""The ``device`` config key, shared by every script that places a model itself."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """``auto`` = the GPU when there is one; otherwise the named device (``cpu``, ``cuda:1``)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)
