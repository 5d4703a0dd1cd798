"""The rate limit of write requests, per user (per client address without a token).

The counting is the ``limits`` library's (the one slowapi uses): a moving window over its
storage, in process memory by default (``memory://``) or shared by several server processes
(``redis://``), from :class:`offmaps.settings.LimitSettings`.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from offmaps.errors import RateLimitError
from offmaps.settings import LimitSettings

__all__ = ["WriteRateLimiter"]


class WriteRateLimiter:
    """Counts write requests by caller key and refuses those over the limit.

    Args:
        settings: ``writes_per_minute`` and ``rate_limit_storage``.
    """

    def __init__(self, settings: LimitSettings) -> None:
        self._item = RateLimitItemPerMinute(settings.writes_per_minute)
        self._limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))

    def hit(self, key: str) -> None:
        """Count one write request of ``key`` (``user:NAME`` or ``ip:ADDRESS``).

        Raises:
            RateLimitError: ``key`` is over the limit; ``retry_after`` says when a request
                will be counted again.
        """
        if self._limiter.hit(self._item, "offmaps-writes", key):
            return
        stats = self._limiter.get_window_stats(self._item, "offmaps-writes", key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitError(
            f"too many write requests: at most {self._item.amount} a minute; try again in {wait} s",
            retry_after=wait,
        )
