"""
Turn untrusted bytes and text into text that is safe to log or print.

A peer may send anything: invalid UTF-8, terminal escape sequences, NUL
bytes, Unicode that ends a line or reverses how one reads.  Logs and
terminals must show what arrived without being altered by it, one record
must stay one line, and two different inputs must never look the same.

One policy, for every field that a client controls (its message, the
addresses of a PROXY header, its certificate's subject, TLS error texts):

- a backslash is doubled, so that no escape can be forged;
- bytes that are not UTF-8 become ``\\xNN``;
- C0 controls, DEL and C1 controls become ``\\xNN`` (``\\t``, ``\\n``,
  ``\\r`` for the usual three);
- every other character that is not a visible character or a plain space:
  line and paragraph separators (U+2028, U+2029), bidirectional controls
  (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069), zero-width
  characters (U+200B to U+200D, U+2060, U+FEFF), and any other format,
  separator or surrogate character (Unicode categories Cf, Zl, Zp, Cs),
  becomes ``\\uNNNN`` (or ``\\UNNNNNNNN``).
"""

from __future__ import annotations

import unicodedata

# Every C0 control, DEL and every C1 control becomes a visible escape, so that
# nothing a peer sends can move a terminal's cursor or forge a log line.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})

# Characters that change how a line reads or where it ends, named here so the
# policy does not depend on the Unicode database's version alone.
_INVISIBLE = frozenset(
    {
        0x061C,
        0x200B,
        0x200C,
        0x200D,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        0x2028,
        0x2029,
        0x2060,
        *range(0x2066, 0x206A),
        0xFEFF,
    }
)

# Unicode categories escaped whatever the character: controls, format
# characters (bidi, zero-width, tags, ...), line and paragraph separators,
# lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escapeCharacter(character: str) -> str:
    code = ord(character)
    if code < 0x100:
        return _CONTROLS.get(code, f"\\x{code:02x}")
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _mustEscape(character: str) -> bool:
    code = ord(character)
    return (
        code < 0x20
        or 0x7F <= code < 0xA0
        or code in _INVISIBLE
        or unicodedata.category(character) in _ESCAPED_CATEGORIES
    )


def _escapeUnicode(text: str) -> str:
    if text.isascii():
        return text.translate(_CONTROLS)
    return "".join(
        _escapeCharacter(character) if _mustEscape(character) else character
        for character in text
    )


def escape(data: bytes) -> str:
    """
    Render ``data`` as printable text that shows every byte unambiguously.

    Valid UTF-8 stays readable; invalid bytes become ``\\xNN``; control,
    format and separator characters become ``\\xNN``, ``\\t``, ``\\n``,
    ``\\r``, ``\\uNNNN`` or ``\\UNNNNNNNN``; a backslash is doubled so that
    an escape can never be forged by the peer.

    :param data: Bytes received from, or to be shown about, a peer.
    :returns: One line of text without control or invisible characters.
    """
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    return _escapeUnicode(data.decode("utf-8", "backslashreplace"))


def escapeText(text: str) -> str:
    """
    Apply `escape`'s policy to text that came from a peer by another route
    (an address, a certificate's subject, an error message).

    :param text: Text that may hold anything a peer chose.
    :returns: One line of text without control or invisible characters.
    """
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    return _escapeUnicode(text)


def quoted(data: bytes, most: int) -> str:
    """
    ``data`` as a drawing shows it: escaped, in double quotes, cut after
    ``most`` bytes (the cut marked ``...``).  Bytes are cut before they are
    escaped, so that no escape is ever shown in part.
    """
    shown = f'"{escape(data[:most])}"'
    return shown + "..." if len(data) > most else shown
