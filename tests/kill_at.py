"""Run train.py and SIGKILL it at a chosen point, for the exact-resume tests.

    python tests/kill_at.py EVENT:STAGE:EPOCH train.py --key=value ...

``save:finetune:1`` dies right after ``last.pt`` is written with the run at finetune epoch 1
(one finetune epoch done); ``log:joint:1`` dies right after the metrics line of joint epoch 1,
before its ``last.pt``. A real SIGKILL: no handler, no flush, nothing of Python's shutdown runs.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from model.trainer import Trainer


def die_after(method: str, matches) -> None:
    """Wrap ``Trainer.<method>`` so the process kills itself after the call that ``matches``."""
    real = getattr(Trainer, method)

    def wrapped(self: Trainer, *args) -> None:
        real(self, *args)
        if matches(self, *args):
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(Trainer, method, wrapped)


def main(argv: list[str]) -> None:
    event, stage, epoch = argv[0].split(":")
    if event == "save":
        die_after(
            "save_last", lambda t: (t.state["stage"], t.state["epoch"]) == (stage, int(epoch))
        )
    elif event == "log":
        die_after("log", lambda t, r: (r["stage"], r.get("epoch")) == (stage, int(epoch)))
    else:
        raise SystemExit(f"unknown event '{event}' (save | log)")
    sys.argv = argv[1:]
    runpy.run_path(argv[1], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
