"""Text that reaches a message or a folder name: the one rule for control characters, and
how any text (a file name from a zip, a class name typed on a phone) is shown safely inside
a one-line message. Plain Python, below every other module."""

import re

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters, DEL included


def has_control_character(text: str) -> bool:
    """Whether ``text`` holds a control character (never allowed in a stored name)."""
    return bool(CONTROL.search(text))


def shown(text, limit: int | None = None) -> str:
    """``text`` safe inside a one-line message: control characters and lone surrogates
    escaped, and, past ``limit`` characters, its middle cut out."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))
    if limit and len(text) > limit:
        keep = (limit - 1) // 2
        text = text[:keep] + "…" + text[-keep:]
    return text
