"""
Turn untrusted bytes into text that is safe to log or print.

A peer may send anything: invalid UTF-8, terminal escape sequences, NUL
bytes.  Logs and terminals must show what arrived without being altered by it,
and two different messages must never look the same.
"""

# Every C0 control, DEL and every C1 control becomes a visible escape, so that
# nothing a peer sends can move a terminal's cursor or forge a log line.
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def escape(data: bytes) -> str:
    """
    Render ``data`` as printable text that shows every byte unambiguously.

    Valid UTF-8 stays readable; invalid bytes become ``\\xNN``; control
    characters become ``\\xNN``, ``\\t``, ``\\n`` or ``\\r``; a backslash is
    doubled so that an escape can never be forged by the peer.

    :param data: Bytes received from, or to be shown about, a peer.
    :returns: Text without control characters.
    """
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    return data.decode("utf-8", "backslashreplace").translate(_CONTROLS)
