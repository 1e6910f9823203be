"""
Make ``twist hellotcp`` and ``twistd hellotcp`` find the hellotcp server.

Twisted imports every plugin module to build its cache, so this one names
`hellotcp.tap` as a string: nothing of hellotcp is imported until the
command is run.
"""

import signal
from typing import Any

from twisted.application.service import ServiceMaker


class _HelloServiceMaker(ServiceMaker):
    @property
    def options(self) -> Any:
        # hellotcp was chosen: from here on SIGHUP must never kill it (its
        # default action).  Until the options are read, nothing has been
        # loaded that a SIGHUP would reload, so it is ignored; the server
        # then notes it (before it reads its TLS files) and handles it (once
        # it runs): see hellotcp.service.
        if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return super().options


hellotcp = _HelloServiceMaker(
    "hellotcp",
    "hellotcp.tap",
    "A greeting server: answers each client's message with a greeting.",
    "hellotcp",
)
