"""What a proposal training run does besides stepping: stop requests, the interruption it raises, the log.

Signals only set a flag, so the step in progress finishes and the checkpoint written after it resumes
exactly (MaskCLIP+'s loop does the same for SIGTERM; here SIGINT too, since a Ctrl-C in the middle of an
optimiser step would leave weights half-updated).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LogFn = Callable[[dict[str, Any]], None]


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a completed step, whose checkpoint was written."""

    def __init__(self, iteration: int, checkpoint: Path, reason: str):
        super().__init__(f"{reason}: stopped at iteration {iteration}; checkpoint {checkpoint} (continue with resume)")
        self.iteration, self.checkpoint, self.reason = iteration, checkpoint, reason


@contextlib.contextmanager
def stop_requests(flag: dict[str, str]) -> Iterator[None]:
    """SIGINT and SIGTERM only set flag["signal"] (their name); a second SIGINT interrupts at once
    (KeyboardInterrupt). Outside the main thread no handler can be installed and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if flag.get("signal") and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class LogWindow:
    """Means of the step results since the last log line, written as one JSON line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.n, self.t = 0, time.perf_counter()

    def add(self, result: dict[str, float]) -> None:
        for k, v in result.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def flush(self, iteration: int, iterations: int, lr: float, batch_size: int, log_path: Path,
              log_fn: LogFn | None) -> dict[str, Any]:
        """Append the record to `log_path`, print it, start a new window, then hand it to `log_fn`."""
        rec: dict[str, Any] = {"iter": iteration, **{k: v / max(self.n, 1) for k, v in self.sums.items()}, "lr": lr,
                               "images_per_s": self.n * batch_size / max(time.perf_counter() - self.t, 1e-9),
                               "time": time.time()}
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"[proposals] it {iteration}/{iterations} loss {rec.get('loss', 0):.4f} (ce {rec.get('loss_ce', 0):.3f} "
              f"mask {rec.get('loss_mask', 0):.4f} dice {rec.get('loss_dice', 0):.3f}) lr {lr:.2e} "
              f"{rec['images_per_s']:.1f} img/s", flush=True)
        self.reset()
        if log_fn is not None:
            log_fn(rec)
        return rec


__all__ = ["LogFn", "LogWindow", "TrainingInterrupted", "stop_requests"]
