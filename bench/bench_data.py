"""Time data_process.py's split stage (raw files -> ETEGRec splits), median of 3 runs.

    .venv/bin/python bench/bench_data.py [--runs=3]

ID-only (no interests, no embeddings) into a temp folder, so only reading, splitting and writing
is timed. Target: under 60 s for amazon23-scientific on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from config import load_config
from data.pipeline import build_dataset

TARGET_S = {"scientific": 60.0}


def time_build(dataset: str, out_dir: Path) -> float:
    """Seconds for one full build; the pipeline's own printout is swallowed."""
    argv = [
        f"--dataset={dataset}",
        f"--out_dir={out_dir}",
        "--interests.backend=none",
        "--embeddings.kind=none",
    ]
    cfg = load_config("data_process", argv)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        build_dataset(cfg)
    return time.perf_counter() - start


def main(runs: int) -> None:
    for dataset in ("scientific", "scientific18"):
        with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
            times = [time_build(dataset, Path(tmp)) for _ in range(runs)]
        median = statistics.median(times)
        line = f"{dataset:13s} splits: median {median:.2f} s over {runs} runs "
        line += "[" + ", ".join(f"{t:.2f}" for t in times) + "]"
        if dataset in TARGET_S:
            met = "met" if median < TARGET_S[dataset] else "MISSED"
            line += f" (target < {TARGET_S[dataset]:g} s: {met})"
        print(line)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a.startswith("--runs=")]
    main(int(args[0].split("=", 1)[1]) if args else 3)
