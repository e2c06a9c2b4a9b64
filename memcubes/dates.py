"""When a statement became true, from the time words in it ("moved to Porto last week").

A memory is dated in prompts by when it holds in the world (``valid_from``), and an update ends
the fact it replaces at that time, so "I moved to Porto last week" said on 2 Dec should hold from
25 Nov, and "I live in Lisbon" until then. The heuristic reader has only the message's time; this
resolves the common English relative expressions against it. An expression it does not know leaves
the message time, which is never later than the truth.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from memcubes.timewords import NUMBER_WORDS

__all__ = ["became_true"]

# "a couple days ago" is read here, not in questions (``timewords``), as before.
_NUMBERS = {**NUMBER_WORDS, "a couple": 2}
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_COUNT = r"(?P<count>\d{1,2}|a\s+couple(?:\s+of)?|a\s+few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
_AGO = re.compile(rf"\b{_COUNT}\s+(?P<unit>day|week|month|year)s?\s+ago\b", re.I)
_LAST = re.compile(r"\b(?:last|past)\s+(?P<unit>night|week|weekend|month|year)\b", re.I)
_YESTERDAY = re.compile(r"\byesterday\b", re.I)
_WEEKDAY = re.compile(rf"\b(?:last|on|this\s+past)\s+(?P<day>{'|'.join(_WEEKDAYS)})\b", re.I)
# "in March", "since June": the latest such month not after the message; a capital is required,
# so that "may" the verb is not read as the month.
_MONTH = re.compile(
    rf"\b(?:in|since|back\s+in|on|last)\s+(?-i:(?P<month>{'|'.join(m.capitalize() for m in _MONTHS)}))"
    r"(?:\s+(?P<year>\d{4}))?\b",
    re.I,
)
_YEAR = re.compile(r"\b(?:in|since|back\s+in)\s+(?P<year>(?:19|20)\d{2})\b", re.I)


def _months_back(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 - months
    year = moment.year + month // 12
    month = month % 12 + 1
    day = min(moment.day, 28)
    return moment.replace(year=year, month=month, day=day)


def became_true(text: str, said_at: datetime) -> datetime | None:
    """When the statement's fact began, if its words say (never after ``said_at``); else None."""
    start = said_at.replace(hour=0, minute=0, second=0, microsecond=0)
    if found := _AGO.search(text):
        count = _NUMBERS.get(found["count"].casefold().replace("  ", " "))
        number = count if count is not None else int(found["count"])
        unit = found["unit"].casefold()
        if unit == "month":
            return _months_back(start, number)
        if unit == "year":
            return _months_back(start, 12 * number)
        return start - timedelta(days=number * (7 if unit == "week" else 1))
    if found := _LAST.search(text):
        unit = found["unit"].casefold()
        if unit == "night":
            return start - timedelta(days=1)
        if unit in ("week", "weekend"):
            return start - timedelta(days=7 if unit == "week" else (start.weekday() + 2) % 7 or 7)
        return _months_back(start, 1 if unit == "month" else 12)
    if _YESTERDAY.search(text):
        return start - timedelta(days=1)
    if found := _WEEKDAY.search(text):
        back = (start.weekday() - _WEEKDAYS.index(found["day"].casefold())) % 7 or 7
        return start - timedelta(days=back)
    if found := _MONTH.search(text):
        month = _MONTHS.index(found["month"].casefold()) + 1
        year = int(found["year"]) if found["year"] else start.year - (month > start.month)
        moment = start.replace(year=year, month=month, day=1)
        return moment if moment <= said_at else None
    if found := _YEAR.search(text):
        year = int(found["year"])
        return start.replace(year=year, month=1, day=1) if year <= start.year else None
    return None
