r"""How many directions an item table uses: the share of its (centred) variance in its top k.

    python experiments/table_spectrum.py --table=data/scientific18/scientific18_emb_256.npy \
        [--dims=16,32,64,96,128,192] [--out=results/table_spectrum_scientific18.json]

Why: the item head scores items by ``query · v(item)`` with ``query = W·state + b``. A decoder
state ``d_model`` wide reaches only a ``d_model``-dim subspace of the table's space; if the table
keeps much of its variance outside any such subspace, items that differ there cannot be told
apart by the query, however well it is trained. Row 0 (padding, all zero) is left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from config import ConfigError, split_argv


def variance_shares(table: np.ndarray, dims: list[int]) -> dict[int, float]:
    """Share of the centred table's variance in its top ``k`` principal directions, per k."""
    centred = table - table.mean(0)
    power = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(power) / power.sum()
    return {k: float(cumulative[min(k, len(cumulative)) - 1]) for k in dims}


def main(argv: list[str]) -> None:
    args = split_argv(argv)
    if "table" not in args:
        raise ConfigError("--table=PATH.npy is required")
    path = Path(args["table"])
    try:
        table = np.load(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--table={path}: unreadable ({err})") from None
    if table.ndim != 2:
        raise ConfigError(f"--table={path}: expected a 2-d table, got shape {table.shape}")
    if not table[0].any():
        table = table[1:]
    dims = [int(d) for d in args.get("dims", "16,32,64,96,128,192").split(",")]
    shares = variance_shares(table.astype(np.float64), dims)
    report = {
        "table": str(path),
        "items": len(table),
        "dim": table.shape[1],
        "variance_share": shares,
    }
    for k, share in shares.items():
        print(f"top {k:4d} of {table.shape[1]} directions: {share:.3f} of the variance")
    if "out" in args:
        Path(args["out"]).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as err:
        sys.exit(f"error: {err}")
