"""
Tests for `hellotcp._escape`.
"""

from twisted.trial.unittest import SynchronousTestCase

from hellotcp._escape import escape


class EscapeTests(SynchronousTestCase):
    """
    `escape` shows every byte unambiguously and lets no control through.
    """

    def test_plainText(self) -> None:
        """
        Printable ASCII and valid UTF-8 are unchanged.
        """
        self.assertEqual(escape(b"Hello, server!"), "Hello, server!")
        self.assertEqual(escape("Grüß dich".encode()), "Grüß dich")

    def test_controls(self) -> None:
        """
        Control characters, DEL and C1 controls become visible escapes.
        """
        self.assertEqual(
            escape(b"a\tb\nc\rd\x00e\x1b[31m"), "a\\tb\\nc\\rd\\x00e\\x1b[31m"
        )
        self.assertEqual(escape(b"\x7f"), "\\x7f")
        self.assertEqual(escape("\u0085".encode()), "\\x85")

    def test_invalidUTF8(self) -> None:
        """
        Bytes that are not UTF-8 become ``\\xNN``.
        """
        self.assertEqual(escape(b"\xff\xfe ok"), "\\xff\\xfe ok")

    def test_backslashCannotForge(self) -> None:
        """
        A literal backslash is doubled, so a peer sending the text ``\\xff``
        is told apart from one sending the byte 0xFF.
        """
        self.assertEqual(escape(b"\\xff"), "\\\\xff")
        self.assertNotEqual(escape(b"\\xff"), escape(b"\xff"))

    def test_noControlSurvives(self) -> None:
        """
        Whatever the 256 byte values, the result holds no control character.
        """
        text = escape(bytes(range(256)))
        self.assertFalse([c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0])
