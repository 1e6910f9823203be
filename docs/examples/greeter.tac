"""
The greeter in a .tac file, for ``twistd -ny greeter.tac``: a MultiService
holding a `HelloService` (graceful stop, clean start-up errors) and, for
comparison, the plain Twisted way of serving a factory on an endpoint.

HELLOTCP_PORT and HELLOTCP_PLAIN_PORT choose the ports (default 5000, 5002).
"""

import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import Application, MultiService
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from hellotcp import HelloServerFactory, HelloService, ServerSettings

port = os.environ.get("HELLOTCP_PORT", "5000")
plainPort = os.environ.get("HELLOTCP_PLAIN_PORT", "5002")

application = Application("greeter")
services = MultiService()
services.setServiceParent(application)

# hellotcp's own service.  Here it is the program, so it asks for a
# program's behaviour: on SIGTERM it stops listening, lets exchanges in
# flight finish, and makes twistd exit 0; a port in use is one line on
# standard error.  Without these two flags it leaves signals to twistd and
# raises hellotcp.ListenError.
greeter = HelloService(
    HelloServerFactory(ServerSettings(greeting=b"Hello from a .tac file!")),
    reactor,
    shutdownTimeout=5,
    handleSignals=True,
    exitOnListenError=True,
)
greeter.listen(f"tcp:{port}:interface=127.0.0.1")
greeter.setServiceParent(services)

# Or any factory, the plain Twisted way.
StreamServerEndpointService(
    serverFromString(reactor, f"tcp:{plainPort}:interface=127.0.0.1"),
    HelloServerFactory(),
).setServiceParent(services)
