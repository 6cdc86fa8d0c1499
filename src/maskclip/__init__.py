"""maskclip: free dense labels from CLIP (MaskCLIP) and segmentation networks trained on them (MaskCLIP+)."""

__version__ = "0.1.0"
