"""
A twisted.web site and the greeter, side by side in one reactor.

    python web_and_greeter.py [WEB_PORT] [GREETER_PORT]   (default 8080 5000)
"""

import sys

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site
from twisted.web.static import Data

from hellotcp import HelloServerFactory, ServerSettings

page = Data(b"The greeter listens beside this page.\n", "text/plain")
page.isLeaf = True  # the page at every path, "/" included

webPort = sys.argv[1] if len(sys.argv) > 1 else "8080"
greeterPort = sys.argv[2] if len(sys.argv) > 2 else "5000"
serverFromString(reactor, f"tcp:{webPort}:interface=127.0.0.1").listen(Site(page))
serverFromString(reactor, f"tcp:{greeterPort}:interface=127.0.0.1").listen(
    HelloServerFactory(ServerSettings(greeting=b"Hello from beside a web site!"))
)
reactor.run()
