"""
hellotcp: a greeting service built on Twisted.

A client connects, sends one short message, and the server logs it, answers
with a greeting and closes.  The public API:

  - `HelloServerFactory` and `ServerSettings`: serve greetings from any
    Twisted server endpoint;
  - `greet`: one exchange from any Twisted client endpoint;
  - `serveTLS` (or `serverTLS` for `HelloService`) and `clientTLS`: TLS
    from certificate and key files, one call each way, verified by
    default; `TLSFileError` names a file that cannot be used;
  - `HelloService`: the factory behind several endpoints, stopping
    gracefully; `ListenError` when one cannot listen.
"""

from ._wire import DEFAULT_GREETING, DEFAULT_MESSAGE
from .greet import HelloClientProtocol, NoGreetingError, ResponseTooLongError, greet
from .protocol import (
    HelloServerFactory,
    HelloServerProtocol,
    Outcome,
    ServerSettings,
)
from .service import HelloService, ListenError
from .tls import TLSFileError, clientTLS, serverTLS, serveTLS

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_GREETING",
    "DEFAULT_MESSAGE",
    "HelloClientProtocol",
    "HelloServerFactory",
    "HelloServerProtocol",
    "HelloService",
    "ListenError",
    "NoGreetingError",
    "Outcome",
    "ResponseTooLongError",
    "ServerSettings",
    "TLSFileError",
    "clientTLS",
    "greet",
    "serveTLS",
    "serverTLS",
]
