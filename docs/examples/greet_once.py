"""
Greet a hellotcp server once from a Twisted program, with `hellotcp.greet`.

    python greet_once.py [ENDPOINT]      (default tcp:localhost:5000)

It prints the answer and exits 0, or prints why there is none in one line
and exits 1.
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react

from hellotcp import greet
from hellotcp.client import checkEndpoint


async def main(reactor: IReactorTime, description: str = "tcp:localhost:5000") -> None:
    try:
        # Twisted's resolver fails, unhandled, on a host name too long to
        # encode, and the exchange then waits for its timeout: check first.
        checkEndpoint(description, option=None)
        endpoint = clientFromString(reactor, description)
        answer = await greet(reactor, endpoint, "Hello, server!", timeout=5)
    except Exception as error:
        print(f"greet_once: {description}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(answer.decode(errors="replace"))


react(lambda reactor, *argv: Deferred.fromCoroutine(main(reactor, *argv)), sys.argv[1:])
