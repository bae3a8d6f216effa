"""The ``device`` config key, shared by every script that places a model itself."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """``auto`` = the GPU when there is one; otherwise the named device (``cpu``, ``cuda:1``)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively: a GPU, or a CPU with AVX512-BF16 or AMX. Elsewhere
    (an AVX2-only CPU) they are emulated, far slower than float32, so ``sasrec_bf16`` falls
    back to float32 there."""
    if device.type != "cpu":
        return True
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
