"""Resume state of an evaluation: the confusion matrix and the names of the images it holds.

Saved atomically every few images. A state made with other settings, or holding images outside the
range asked for now (a smaller --limit), is discarded together with its report, so that a report in
the folder always describes exactly the images and settings of the run that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io.atomic import write_json
from .metrics import ConfusionMatrix


@dataclass
class EvalState:
    confusion: ConfusionMatrix
    done: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class ResumeStore:
    out_dir: Path
    key: str

    @property
    def path(self) -> Path:
        return self.out_dir / "state.json"

    def load(self, num_classes: int, ignore_index: int, names: Sequence[str]) -> EvalState:
        """The saved progress of this very evaluation over `names`, else a fresh state (stale files removed)."""
        try:
            state = json.loads(self.path.read_text())
            if state.get("settings_key") == self.key and set(state["done"]) <= set(names):
                return EvalState(ConfusionMatrix.from_dict(state["confusion"]), list(state["done"]),
                                 float(state.get("seconds", 0)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        for stale in (self.path, self.out_dir / "report.json", self.out_dir / "report.md"):
            stale.unlink(missing_ok=True)
        return EvalState(ConfusionMatrix(num_classes, ignore_index))

    def save(self, state: EvalState) -> None:
        write_json(self.path, {"settings_key": self.key, "confusion": state.confusion.to_dict(), "done": state.done,
                               "seconds": state.seconds})


__all__ = ["EvalState", "ResumeStore"]
