"""Helpers shared by the tests (imported by name; conftest.py holds only fixtures)."""
