"""What an HTTP header a tenant configures may hold (RFC 9110 §5.1, §5.5).

Checked when a tool is registered (a clear 422) and again before every call, so a
header that cannot be sent is a failed tool call, never a crash of the worker.
"""

from __future__ import annotations

import re

# A field name is a token; a value is visible ASCII, with spaces and tabs only inside.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


def header_problem(name: str, value: str) -> str | None:
    """Why the header cannot be sent, or None. The reason never quotes the value."""
    if not _TOKEN.fullmatch(name):
        return f"header name {name!r} is not an RFC 9110 token"
    if not _VALUE.fullmatch(value):
        return f"the value of header {name!r} is not visible ASCII"
    return None
