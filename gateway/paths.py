"""Request paths: the one canonical form routing, policy and the upstream all use (SECURITY.md).

Runs before routing: a path is normalised (or refused with 400) first, then matched. Pure functions,
no I/O. What is refused and why is in SECURITY.md ("One path, one decision").
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

from .errors import BadRequest

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
# SECURITY: characters that some upstream reads as a separator or a different path; `#` too: a
# request target has no fragment, and an upstream URL would cut the path there (Istio CVE-2021-39156)
_AMBIGUOUS = re.compile(r"[\\;#\x00-\x20\x7f]|%(?![0-9A-Fa-f]{2})")
# a path already in canonical form: segments of unreserved and sub-delim characters (no `;`), none
# of them empty or ending in a dot (so neither `.` nor `..`), a trailing slash aside
_PLAIN = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]++(?<!\.))+/?|/")
_FORBIDDEN_ESCAPES = frozenset({"2F", "5C", "00", "3B"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1, once decoded


def _decode_unreserved(m: re.Match[str]) -> str:
    code = m.group(1).upper()
    if code in _FORBIDDEN_ESCAPES:
        raise BadRequest("the path holds an encoded separator (%2F, %5C, %3B or %00)")
    char = chr(int(code, 16))
    return char if char in _UNRESERVED else "%" + code


def _reads_as_ascii(char: str) -> bool:
    """Whether case mapping or compatibility normalisation turns a non-ASCII character into ASCII:
    U+017F long s (upper: S), U+212A Kelvin sign (lower: k), U+0131 dotless i (upper: I), U+00DF sharp
    s (casefold: ss), U+FB00 ff ligature (upper: FF), U+FF0F fullwidth solidus (NFKC: /)..."""
    forms = (char.lower(), char.upper(), char.casefold(), unicodedata.normalize("NFKC", char))
    return any(c.isascii() for form in forms for c in form)


def _refuse_misread(segment: str) -> None:
    """Refuse a path segment that common servers read as another one (issue 9)."""
    text = segment
    if "%" in segment or not segment.isascii():
        try:
            text = unquote_to_bytes(segment).decode()
        except UnicodeError:
            # no one reading of bytes that are not UTF-8: a server may fall back to a legacy code
            # page, or decode overlong forms (`%c0%ae` as `.`, CVE-2000-0884)
            raise BadRequest("the path holds percent-encoded bytes that are not UTF-8") from None
    if _CONTROL.search(text):
        raise BadRequest("the path holds an encoded control character")
    # SECURITY: IIS and Windows drop trailing dots and spaces (`/svc./x` is `/svc/x`), Java's trim()
    # and .NET's Trim() drop leading ones too
    if text.endswith(".") or text != text.strip():
        raise BadRequest("a path segment ends in a dot, or starts or ends with whitespace")
    # SECURITY: Java's equalsIgnoreCase reads `%C5%BFvc` (U+017F long s) as `svc`, case-insensitive
    # matchers fold the Kelvin sign to `k`, NFKC turns fullwidth forms into ASCII: another route
    if any(_reads_as_ascii(c) for c in text if not c.isascii()):
        raise BadRequest("the path holds a character that case mapping or normalisation reads as ASCII")


def normalise_path(raw_path: str) -> str:
    """The one canonical form of a request path, used for routing, policy and upstream alike.

    Unreserved characters are decoded (``%2e`` is ``.``) and other escapes upper-cased; ``.`` and
    ``..`` segments are resolved; repeated slashes are collapsed. Ambiguous paths (encoded slashes,
    backslashes, ``;``, ``#``, control characters, ``..`` above the root) raise BadRequest, and so do
    segments servers read as others: ending in a dot, starting or ending with whitespace, not UTF-8,
    or holding a non-ASCII character that case mapping or NFKC turns into ASCII.
    """
    if _PLAIN.fullmatch(raw_path):
        return raw_path  # nothing to decode or resolve: the common case, decided by one regex
    if not raw_path.startswith("/"):
        raise BadRequest("the request target must be an absolute path")
    # SECURITY: one decision on one path; anything a server might read another way is refused
    if _AMBIGUOUS.search(raw_path):
        raise BadRequest("the path holds characters that servers read differently")
    path = _PCT.sub(_decode_unreserved, raw_path)
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if not out:
                raise BadRequest("the path climbs above the root")
            out.pop()
        elif seg not in (".", ""):
            _refuse_misread(seg)
            out.append(seg)
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def split_target(target: str) -> tuple[str, str]:
    """The normalised path (see `normalise_path`) and the query, as sent, of a request target; a
    ``#`` in either raises BadRequest."""
    raw_path, _, query = target.partition("?")
    # SECURITY: as in the path: a request target has no fragment (RFC 9112 §3.2), and an upstream
    # would end the query at the `#`, acting on another query than the one sent
    if "#" in query:
        raise BadRequest("the query holds a '#': a request target has no fragment (send it as %23)")
    return normalise_path(raw_path), query
