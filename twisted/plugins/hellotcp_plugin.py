"""
Make ``twist hellotcp`` and ``twistd hellotcp`` find the hellotcp server.

Twisted imports every plugin module to build its cache, so this one names
`hellotcp.tap` as a string: nothing of hellotcp is imported until the
command is run.
"""

from twisted.application.service import ServiceMaker

hellotcp = ServiceMaker(
    "hellotcp",
    "hellotcp.tap",
    "A greeting server: answers each client's message with a greeting.",
    "hellotcp",
)
