"""
Greet a hellotcp server once from a Twisted program, with `hellotcp.greet`.

    python greet_once.py [ENDPOINT]      (default tcp:localhost:5000)
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react

from hellotcp import greet


async def main(reactor: IReactorTime, description: str = "tcp:localhost:5000") -> None:
    endpoint = clientFromString(reactor, description)
    answer = await greet(reactor, endpoint, "Hello, server!", timeout=5)
    print(answer.decode())


react(lambda reactor, *argv: Deferred.fromCoroutine(main(reactor, *argv)), sys.argv[1:])
