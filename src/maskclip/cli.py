"""The `maskclip` command: a thin argparse front over the Python API.

Each sub-command lives in `maskclip.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["demo", "segment", "label", "eval", "robustness", "train", "toyworld"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskclip",
        description="Open-vocabulary dense labels from CLIP (MaskCLIP) and networks trained on them (MaskCLIP+).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"maskclip.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"maskclip.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .dense.features import SettingsError

    try:
        return int(args.func(args) or 0)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
