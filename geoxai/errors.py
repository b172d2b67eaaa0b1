"""User-facing errors.

A ``GeoxaiError`` is a mistake the user can fix (a bad path, option or file). The CLI prints its
message on one line and exits with status 2 instead of showing a traceback; anything else is a bug
and keeps its traceback.
"""


class GeoxaiError(Exception):
    """An error caused by user input; the message names the culprit and the fix."""


class UnreadableImageError(GeoxaiError):
    """An image file that cannot be decoded (truncated, corrupt or not an image)."""
