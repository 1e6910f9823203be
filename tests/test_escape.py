"""
Tests for `hellotcp._escape`.
"""

from twisted.trial.unittest import SynchronousTestCase

from hellotcp._escape import escape, escapeText


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


class UnicodePolicyTests(SynchronousTestCase):
    """
    The one escaping policy: besides controls, every character that breaks
    a line or changes how it reads becomes a visible escape, for bytes and
    text alike.
    """

    def test_separatorsBidiZeroWidth(self) -> None:
        """
        Line and paragraph separators, bidi controls and zero-width
        characters, each named by the policy, are escaped.
        """
        named = [
            0x2028,
            0x2029,
            0x061C,
            0x200E,
            0x200F,
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
            0x200B,
            0x200C,
            0x200D,
            0x2060,
            0xFEFF,
        ]
        for code in named:
            character = chr(code)
            self.assertEqual(escape(character.encode()), f"\\u{code:04x}")
            self.assertEqual(escapeText(f"a{character}b"), f"a\\u{code:04x}b")

    def test_otherFormatCharacters(self) -> None:
        """
        Any other format character (a soft hyphen, a tag character) is
        escaped too; ordinary letters, symbols and spaces are not.
        """
        self.assertEqual(escapeText("\u00ad"), "\\xad")
        self.assertEqual(escapeText("\U000e0041"), "\\U000e0041")
        self.assertEqual(escapeText("Grüß dich ✓ 日本"), "Grüß dich ✓ 日本")

    def test_oneLineWhateverTheInput(self) -> None:
        """
        Every code point, as bytes or text: the result is one line.
        """
        text = "".join(chr(c) for c in range(0x30000) if not 0xD800 <= c < 0xE000)
        for escaped in (escape(text.encode()), escapeText(text)):
            self.assertEqual(len(escaped.splitlines()), 1)

    def test_textBackslashDoubled(self) -> None:
        """
        In text too, a backslash is doubled: ``\\u2028`` sent literally is
        told apart from the separator itself.
        """
        self.assertEqual(escapeText("\\u2028"), "\\\\u2028")
        self.assertNotEqual(escapeText("\\u2028"), escapeText("\u2028"))
