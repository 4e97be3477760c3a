"""Look into a JSON request body before it is parsed, so that what a parse would cost is refused first."""

from __future__ import annotations

import re

from modelfleet.errors import PayloadTooLarge

# A run of JSON text with no quote in it; at a quote, so that a failed try costs one run and not one
# try per byte. Built per limit (one limit per server) and cached by `re`.
_QUOTE_RUN = r'"([^"]{%d,})'
# Bytes that JSON allows outside strings (whitespace, punctuation, numbers, true/false/null). A run
# holding anything else lies inside a string (or the body is not JSON, which earns a 4xx anyway).
_OUTSIDE_STRINGS = re.compile(rb"[^\s,:\[\]{}0-9eE.+\-truefalsn]")
# Strings shorter than this are left to the exact check after the parse: the scan cannot tell an
# element from a key or a parameter, and below this size the parse costs little.
_SCAN_FLOOR_BYTES = 64 * 1024


def refuse_long_strings(json_text: bytes | bytearray, max_element_bytes: int) -> None:
    """Refuse a body holding a string too long for any BYTES element before it is parsed.

    Parsing a 20 MB string costs 20 MB more on top of the body (measured: orjson's str of it), and the
    length check after the parse then refuses it anyway; this bounds the cost to the body. Only bodies
    longer than the threshold (the element limit, at least 64 KiB) are scanned, with a `re` search that
    visits each quote once (~60 ms for 20 MB). A run's decoded length is bounded from below: an escape
    decodes to at least one byte (so at most 5 fewer per backslash), and base64 to 3 bytes per 4
    characters. Any string over the threshold is refused, key or parameter too: none is near it.
    """
    threshold = max(max_element_bytes, _SCAN_FLOOR_BYTES)
    if len(json_text) <= threshold:
        return
    for match in re.finditer((_QUOTE_RUN % (threshold + 1)).encode(), json_text):
        start, end = match.span(1)
        if _OUTSIDE_STRINGS.search(json_text, start, end) is None:
            continue  # numbers and punctuation: may lie between two strings, not in one
        run = end - start
        decoded_at_least = min(run - 5 * json_text.count(b"\\", start, end), run * 3 // 4 - 2)
        if decoded_at_least > threshold:
            raise PayloadTooLarge(
                f"the request holds a string of at least {decoded_at_least} bytes decoded, over the limit "
                f"of {max_element_bytes} bytes for one BYTES element (server.max_element_bytes)"
            )
