"""Credentials out of everything we print: the one redaction of URIs (and of text that quotes them).

:func:`redact` hides the password of every ``scheme://user:password@host``
in a string (a URI, or an error message that quotes one, as pymilvus and
pymongo messages do) and the value of secret-looking query parameters
(``password=``, ``token=``, ``secret=``, ``api_key=`` ...). The user name and
host stay: they say which server was meant. A bare ``scheme://token@host``
(a token as the user part) is hidden whole. Pure.

Every message that names a store (job errors, serving's gRPC details, logs)
passes its URI through here; nothing else redacts.
"""
from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ ; userinfo has no '/', and ends at the last '@' before the host.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
_SECRET_PARAM = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)"
                           r"(?P<value>[^&;#\s]*)", re.IGNORECASE)


def _userinfo(match: re.Match) -> str:
    user, colon, _ = match.group("userinfo").partition(":")
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{shown}@"


def redact(text: str) -> str:
    """``text`` with every URI password (and secret query parameter) replaced by ``***``."""
    text = _USERINFO.sub(_userinfo, str(text))
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)
