"""Calendar arithmetic shared by the node (retention periods) and the coordinator (Dublin
time limits and deadlines), so both count a month the same way."""

from __future__ import annotations

import calendar
import datetime as dt

from fedmatch.errors import InvalidInput

__all__ = ["add_months"]


def add_months(day: dt.date, months: int) -> dt.date:
    """Add calendar months to ``day``, clamping to the last day of a shorter month.

    2025-01-31 + 1 is 2025-02-28; 2024-02-29 + 12 is 2025-02-28. ``months`` may be negative.
    """
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise InvalidInput("day must be a calendar date")
    if isinstance(months, bool) or not isinstance(months, int):
        raise InvalidInput("months must be an integer")
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not dt.MINYEAR <= year <= dt.MAXYEAR:
        raise InvalidInput("adding months to the date leaves the calendar's range")
    month = month0 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
