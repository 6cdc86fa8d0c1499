"""`maskclip export`: a finished segment / label run in the formats annotation tools import."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export.formats import FORMATS

EPILOG = """formats:
  coco           OUT/export/coco.json: images, categories (id = class index + 1) and one annotation per class
                 per image with a compressed RLE (pycocotools: COCO(path).annToMask(ann))
  coco-panoptic  OUT/export/panoptic.json + panoptic/NAME.png (segment id = R + 256 G + 256^2 B); --things
                 classes get one segment per connected region, the others one per image
  labelstudio    OUT/export/labelstudio.json: tasks whose predictions are brushlabels (Label Studio's RLE),
                 one result per class; import as pre-annotations with a BrushLabels tag named "tag" on "image"
  cvat           OUT/export/cvat.zip: CVAT's "Segmentation mask 1.1" (labelmap.txt with the label PNGs'
                 colours, SegmentationClass/ and SegmentationObject/ PNGs)
  masks          OUT/export/masks/NAME/KKK_CLASS.png: one binary mask (0/255) per class present

examples:
  maskclip segment photos/ --classes "cat,dog,sofa" --out run/ --export coco,labelstudio
  maskclip export run/ --format coco-panoptic --things cat,dog
  maskclip export run/ --format cvat --out to_cvat/"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a finished segment/label run (COCO, COCO panoptic, Label Studio, CVAT)",
                       description="Write the label maps of a finished `maskclip segment` or `maskclip label` run "
                                   "(its --out folder) in the formats annotation tools import. The label maps are "
                                   "only read; every export file is written atomically.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="the --out folder of a finished segment/label run")
    p.add_argument("--format", required=True, metavar="F[,F...]", help=f"one or more of {', '.join(FORMATS)}")
    p.add_argument("--things", default="", metavar="NAMES",
                   help="coco-panoptic: comma-separated classes that are countable things (one segment per "
                        "connected region); the others are stuff (default: none)")
    p.add_argument("--out", type=Path, default=None, help="where to write (default RUN_DIR/export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export.writer import export_run, parse_formats

    things = tuple(t.strip() for t in args.things.split(",") if t.strip())
    written = export_run(args.run, parse_formats(args.format), args.out, things)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0
