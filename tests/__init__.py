"""
Tests for hellotcp, run with C{python -m twisted.trial tests}.
"""
