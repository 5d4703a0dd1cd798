"""Fixtures shared by the SDK's end-to-end tests."""

from tests.client.test_sync import take_offline

__all__ = ["take_offline"]
