"""
The baselines hellotcp is measured against, each speaking the same
protocol on the same listen backlog: the message ends at a line feed (or the
client's half-close) and the server answers with the greeting.

Most close safely, as docs/protocol.md defines the close: they shut down
their writing side and close once the client has closed (closing at once
would reset a client still sending).  The dozen-line Twisted server closes
at once instead (``loseConnection`` at the first ``dataReceived``): the
least a Twisted server can do, and what a first Twisted server usually
does.  Over TLS, where a stream cannot be half-closed, every one closes with
a TLS close alert.

  python bench/servers.py twisted PORT [CERT KEY]        the dozen-line Twisted server
  python bench/servers.py twisted-safe PORT [CERT KEY]   the same with the safe close
  python bench/servers.py asyncio PORT [CERT KEY]        a minimal asyncio.Protocol server
  python bench/servers.py classic PORT                   the classic blocking server

None logs anything; with CERT and KEY they serve TLS.
"""

from __future__ import annotations

import socket
import ssl
import sys
from typing import Any

GREETING = b"Hello, client!"
BACKLOG = 4096


def twisted(port: int, tls: tuple[str, str] | None) -> None:
    """
    The floor for anything built on Twisted: a dozen lines of Protocol,
    closing at once.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet.protocol import Factory, Protocol

    class Greeter(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(GREETING)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    _serve(_reactor, Factory.forProtocol(Greeter), port, tls)


def twistedSafe(port: int, tls: tuple[str, str] | None) -> None:
    """
    The dozen-line Twisted server with the protocol's safe close.
    """
    from twisted.internet import reactor as _reactor
    from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
    from twisted.internet.protocol import Factory, Protocol
    from zope.interface import implementer

    @implementer(IHalfCloseableProtocol)
    class Greeter(Protocol):
        answered = False
        transport: ITCPTransport

        def dataReceived(self, data: bytes) -> None:
            if b"\n" in data and not self.answered:
                self.answer()

        def answer(self) -> None:
            self.answered = True
            self.transport.write(GREETING)
            if tls:
                self.transport.loseConnection()
            else:
                self.transport.loseWriteConnection()

        def readConnectionLost(self) -> None:
            if not self.answered:
                self.answer()
            self.transport.loseConnection()

        def writeConnectionLost(self) -> None:
            pass

    _serve(_reactor, Factory.forProtocol(Greeter), port, tls)


def _serve(reactor: Any, factory: Any, port: int, tls: tuple[str, str] | None) -> None:
    factory.noisy = False
    if tls:
        from twisted.internet import ssl as tssl

        with open(tls[0], "rb") as certificate, open(tls[1], "rb") as key:
            options = tssl.PrivateCertificate.loadPEM(
                certificate.read() + key.read()
            ).options()
        reactor.listenSSL(
            port, factory, options, backlog=BACKLOG, interface="127.0.0.1"
        )
    else:
        reactor.listenTCP(port, factory, backlog=BACKLOG, interface="127.0.0.1")
    reactor.run()


def asyncio(port: int, tls: tuple[str, str] | None) -> None:
    """
    A minimal stdlib asyncio.Protocol server.
    """
    import asyncio as aio

    class Greeter(aio.Protocol):
        answered = False

        def connection_made(self, transport: aio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if b"\n" in data and not self.answered:
                self.answer()

        def answer(self) -> None:
            self.answered = True
            self.transport.write(GREETING)  # type: ignore[attr-defined]
            if tls:
                self.transport.close()
            else:
                self.transport.write_eof()  # type: ignore[attr-defined]

        def eof_received(self) -> bool:
            if not self.answered:
                self.answer()
            self.transport.close()
            return False

    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)

    async def main() -> None:
        server = await aio.get_running_loop().create_server(
            Greeter, "127.0.0.1", port, backlog=BACKLOG, ssl=context
        )
        await server.serve_forever()

    aio.run(main())


def classic(port: int, tls: None) -> None:
    """
    The classic blocking-socket server: one connection at a time.
    """
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(BACKLOG)
    while True:
        connection, _ = listener.accept()
        connection.recv(1024)
        connection.sendall(GREETING)
        connection.close()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    files = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
    kinds = {
        "twisted": twisted,
        "twisted-safe": twistedSafe,
        "asyncio": asyncio,
        "classic": classic,
    }
    kinds[kind](port, files)  # type: ignore[operator]
