"""`maskclip convert-checkpoint`: rewrite an old-format MaskCLIP+ file in the current, safe format."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SettingsError

DESCRIPTION = """Rewrite a MaskCLIP+ model file (model.pt) or training checkpoint (checkpoint.pt) written
by an older maskclip (format maskclip-plus-model/1 or maskclip-plus-train/1) in the current format
(.../2), which maskclip loads with torch.load(weights_only=True) and a checksum.

The old formats are Python pickles: fully unpickling one runs any code stored in it, which is why
maskclip no longer reads them. Convert only files you trust (ones you trained yourself). The
conversion itself still never runs code from the file: it reads tensors, plain values and numpy
arrays only, and refuses anything else. OLD is left untouched; NEW is written atomically."""

EPILOG = """examples:
  maskclip convert-checkpoint runs/voc/model.pt runs/voc/model-v2.pt
  maskclip convert-checkpoint runs/voc/checkpoint.pt runs/voc/checkpoint-v2.pt
      (then replace the old file with the new one to resume: mv runs/voc/checkpoint-v2.pt runs/voc/checkpoint.pt)"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-checkpoint", help="convert an old-format MaskCLIP+ model or checkpoint you trust",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path, metavar="OLD", help="the old-format file (maskclip-plus-model/1 or -train/1)")
    p.add_argument("new", type=Path, metavar="NEW", help="where to write the converted file (not OLD itself)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plus.formats import upgrade_plus_file

    old, new = args.old.expanduser(), args.new.expanduser()
    if old.resolve() == new.resolve():
        raise SettingsError(f"NEW {new} is OLD itself; write the converted file under another name")
    if new.is_dir():
        raise SettingsError(f"NEW {new} is a folder; give the path of the file to write")
    fmt = upgrade_plus_file(old, new)
    print(f"wrote {new} ({fmt}) from {old}")
    return 0
