"""
Tests for hellotcp, run with ``python -m twisted.trial tests``.
"""
