"""Command-line options generated from a config dataclass's field metadata (`dense.config.option`).

Every generated option defaults to None ("not given"), so that the settings a run uses are layered:
the model's recommended settings (bundled toy CLIPs) or an evaluation protocol, then what the user gave.
`--help` shows the config's own default of each.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, fields
from typing import Any


def bounded_int(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {v}")
        return v
    parse.__name__ = "int"
    return parse


def _number(text: str, ok, expected: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return v


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1] (thresholds on probabilities)."""
    return _number(text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    return _number(text, lambda v: v > 0, "a finite number > 0")


def non_negative(text: str) -> float:
    """An argparse type: a finite number >= 0 (weights, decay, clipping)."""
    return _number(text, lambda v: v >= 0, "a finite number >= 0")


def size_pair(text: str) -> tuple[int, int]:
    """An argparse type: N or H,W (also HxW) positive integers -> (H, W)."""
    try:
        vals = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        vals = []
    if not 1 <= len(vals) <= 2 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"expected N or H,W (positive integers), got {text!r}")
    return (vals[0], vals[-1])


_NAMED = {"fraction": fraction, "positive_float": positive_float}


def _type(parse: Any):
    if isinstance(parse, tuple):
        return bounded_int(*parse)
    return _NAMED.get(parse, parse) if parse is not None else None


def _shown(value: Any, meta: dict) -> str:
    if value is None and "none_as" in meta:
        value = meta["none_as"]
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def add_config_options(group: Any, cls: type, flags: dict[str, str] | None = None, note: str = "",
                       prefix: str = "") -> None:
    """One option per field of `cls` that has command-line metadata; `flags` renames some (field -> flag);
    the parsed values go to `prefix + field name`."""
    for f in fields(cls):
        meta = f.metadata.get("cli")
        if meta is None:
            continue
        flag = (flags or {}).get(f.name) or meta.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_ = f"{meta['help']} (default: {_shown(default, meta)}{note})"
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": None, "help": help_}
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        else:
            if meta.get("choices") is not None:
                kw["choices"] = meta["choices"]
            if meta.get("parse") is not None:
                kw["type"] = _type(meta["parse"])
            kw["metavar"] = meta.get("metavar") or (None if "choices" in kw else f.name.upper())
        group.add_argument(flag, *meta.get("aliases", ()), **kw)


def config_overrides(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` the user set on the command line (with "fp32"-like spellings of None undone)."""
    out = {}
    for f in fields(cls):
        meta = f.metadata.get("cli")
        if meta is None or getattr(args, prefix + f.name, None) is None:
            continue
        v = getattr(args, prefix + f.name)
        out[f.name] = None if "none_as" in meta and v == meta["none_as"] else v
    return out


__all__ = ["add_config_options", "bounded_int", "config_overrides", "fraction", "non_negative", "positive_float",
           "size_pair"]
