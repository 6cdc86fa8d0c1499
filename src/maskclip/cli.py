"""The `maskclip` command: a thin argparse front over the Python API.

Each sub-command lives in `maskclip.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator

COMMANDS = ["demo", "segment", "label", "export", "serve", "classify_masks", "eval", "robustness", "train",
            "train_proposals", "toyworld", "convert_checkpoint", "export_onnx"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the option and what is wrong, then where the help is."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="maskclip",
        description="Open-vocabulary dense labels from CLIP (MaskCLIP) and networks trained on them (MaskCLIP+).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"maskclip {__version__}")
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


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM ends the command like Ctrl-C does: through exceptions, so temporary files are removed and
    partial outputs never stay under their final names (a training run installs its own handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .clip.download import WeightsError
    from .errors import SettingsError

    try:
        with sigterm_exits():
            return int(args.func(args) or 0)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
