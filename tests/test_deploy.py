"""
The container image and the Kubernetes manifests, as far as they can be
tested without a registry or a cluster: hadolint finds no error in the
Dockerfile, kubernetes-validate accepts every manifest, the promises they
make to each other hold (non-root, read-only root, grace period above the
drain and the shutdown), and the image's command line, with the
Deployment's arguments, serves the Deployment's probes, which turn the pod
unready while it drains and still greets clients.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .pki import PKI
from .support import (
    CHECKOUT,
    TIMEOUT,
    CommandTestCase,
    classicClient,
    command,
    freePort,
    installed,
    inThread,
)

ROOT = CHECKOUT
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
MANIFESTS = sorted(glob.glob(os.path.join(ROOT, "contrib", "kubernetes", "*.yaml")))


def tool(name: str) -> str:
    """
    A program of the test extra.
    """
    return installed(name, "pip install -e '.[test]'")


def dockerCommand() -> list[str]:
    """
    The image's command line: its ENTRYPOINT, then its CMD.
    """
    with open(DOCKERFILE) as dockerfile:
        text = dockerfile.read()
    [entrypoint] = re.findall(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, re.M)
    words: list[str] = json.loads(entrypoint) + json.loads(cmd)
    return words


def deployment() -> dict[str, Any]:
    """
    The Deployment, read with the YAML loader kubernetes-validate brings.
    """
    import yaml  # type: ignore[import-untyped,unused-ignore]

    with open(os.path.join(ROOT, "contrib", "kubernetes", "deployment.yaml")) as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


class LintTests(CommandTestCase):
    """
    The engines' own tools accept the files.
    """

    async def test_hadolint(self) -> None:
        """
        hadolint finds nothing in the Dockerfile, not even a warning.
        """
        status, out, err = await self.runCommand([tool("hadolint"), DOCKERFILE])
        self.assertEqual((status, out + err), (0, ""))

    async def test_kubernetesValidate(self) -> None:
        """
        kubernetes-validate, strict, accepts every manifest: a Deployment,
        a Service and a PodDisruptionBudget.
        """
        status, out, err = await self.runCommand(
            [tool("kubernetes-validate"), "--strict", *MANIFESTS]
        )
        self.assertEqual(status, 0, out + err)
        for kind in ("deployment/hellotcp", "service/hellotcp", "poddisruptionbudget"):
            self.assertIn(f"passed for resource {kind}", out + err)


class PromisesTests(CommandTestCase):
    """
    What the image and the Deployment promise each other.
    """

    def test_imageRunsUnprivileged(self) -> None:
        """
        The image runs as the unprivileged user the pod asks for, installs
        the package as a wheel, and listens on every interface.
        """
        with open(DOCKERFILE) as dockerfile:
            text = dockerfile.read()
        self.assertRegex(text, r"(?m)^USER 10001$")
        self.assertIn("pip wheel", text)
        self.assertIn("/wheels/hellotcp-*.whl", text)
        self.assertEqual(
            dockerCommand()[:3], ["twist", "--log-format=json", "hellotcp"]
        )
        self.assertEqual(dockerCommand()[3:], ["--listen", "tcp:5000"])
        spec = deployment()["spec"]["template"]["spec"]
        self.assertEqual(spec["securityContext"]["runAsUser"], 10001)
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        [container] = spec["containers"]
        context = container["securityContext"]
        self.assertTrue(context["readOnlyRootFilesystem"])
        self.assertEqual(context["capabilities"]["drop"], ["ALL"])
        self.assertFalse(context["allowPrivilegeEscalation"])

    def test_graceAboveDrainAndShutdown(self) -> None:
        """
        The kubelet waits longer than twist needs to stop by itself.
        """
        spec = deployment()["spec"]["template"]["spec"]
        [container] = spec["containers"]
        args = container["args"]
        drain = float(args[args.index("--drain-time") + 1])
        shutdown = float(args[args.index("--shutdown-timeout") + 1])
        self.assertGreater(spec["terminationGracePeriodSeconds"], drain + shutdown)
        readiness = container["readinessProbe"]
        self.assertLess(
            readiness["periodSeconds"] * readiness["failureThreshold"], drain
        )
        liveness = container["livenessProbe"]
        self.assertGreater(
            liveness["periodSeconds"] * liveness["failureThreshold"], drain + shutdown
        )


class ProbeTests(CommandTestCase):
    """
    The image's command and the Deployment's probes, run against each
    other outside a container.
    """

    async def test_probesAgainstTheCommand(self) -> None:
        """
        The readiness and liveness commands pass against the server the
        image runs with the Deployment's arguments; on SIGTERM the server
        drains: the probes fail while a client is still greeted; then it
        exits 0.
        """
        pki = PKI(self.folder)
        plain, secure, metrics = freePort(), freePort(), freePort()
        [container] = deployment()["spec"]["template"]["spec"]["containers"]
        args: list[str] = list(container["args"])
        # The pod's ports and files, here.
        replace = {
            "tcp:5000": f"tcp:{plain}:interface=127.0.0.1",
            "tcp:5001": f"tcp:{secure}:interface=127.0.0.1",
            "tcp:9100": f"tcp:{metrics}:interface=127.0.0.1",
            "/etc/hellotcp/tls/tls.crt": pki.server[0],
            "/etc/hellotcp/tls/tls.key": pki.server[1],
        }
        args = [replace.get(word, word) for word in args]
        entrypoint = dockerCommand()[:3]
        server = await self.startServer(
            [command(entrypoint[0]), *entrypoint[1:], *args], plain
        )

        def probe(name: str) -> list[str]:
            words: list[str] = container[name]["exec"]["command"]
            return [
                command(words[0]),
                *[w.replace("127.0.0.1:5000", f"127.0.0.1:{plain}") for w in words[1:]],
            ]

        for name in ("readinessProbe", "livenessProbe"):
            status, out, err = await self.runCommand(probe(name))
            self.assertEqual((status, out, err), (0, "Hello, client!\n", ""), name)
        server.transport.signalProcess("TERM")  # type: ignore[union-attr]
        # Draining: the readiness probe fails at once, clients are greeted.
        await deferLater(reactor, 0.5)
        status, _, err = await self.runCommand(probe("readinessProbe"))
        self.assertEqual(status, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertEqual((await inThread(classicClient, plain))[0], b"Hello, client!")
        self.assertFalse(server.ended.called)
        self.assertEqual(await server.ended.addTimeout(4 * TIMEOUT, reactor), 0)
        # Health checks are not logged; the classic client's exchange is.
        out = server.out.decode() + server.err.decode()
        self.assertNotIn('"message": "health-check"', out)
        self.assertIn('"drainTime": 10.0', out)
