"""The local web demo (`maskclip serve`): try a vocabulary on an image in the browser."""
