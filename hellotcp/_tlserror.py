"""
Say in words why a TLS connection failed.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto


def describeTLSError(error: BaseException | None) -> str:
    """
    The reasons OpenSSL gives for ``error``, joined into one short line.
    """
    reasons = None
    if isinstance(error, (SSL.Error, crypto.Error)) and error.args:
        reasons = error.args[0]
    if isinstance(reasons, list):
        texts = [str(entry[-1]) for entry in reasons if isinstance(entry, tuple)]
        if texts:
            return "; ".join(texts)
    return str(error) or "TLS error"
