"""Label maps in the formats annotation tools import (COCO, COCO panoptic, Label Studio, CVAT)."""
