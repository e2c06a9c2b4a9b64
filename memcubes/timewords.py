"""Time in words: the window a question asks about, and the dates a message mentions.

Both sides of time-aware retrieval read dates out of text:

- a **question** may name a window, absolute ("in March 2021", "on 3 May 2022", "between 3 and 9
  May 2022", "the week after 2 October") or relative to when it is asked ("last month", "two
  years ago", "yesterday"): ``query_window`` returns it, and retrieval ranks the memories whose
  time falls in it as a list of their own;
- a **message** may say when what it tells happened ("I went there yesterday", "we met last
  week", "in 2019"): ``mentioned_windows`` resolves those against the message's own time at write
  time, so a memory said on 8 May about "yesterday" is found for a question about 7 May.

A window without a year ("the week after 2 October") recurs every year: it matches the same days
of any year (``Window.yearly``), which is what a question about a conversation of another year
means. Written for speed on the request path (a handful of compiled patterns, no parser library:
``dateparser``'s ``search_dates`` takes milliseconds per question); English month and relative
words, as the rest of the rule-based reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["NUMBER_WORDS", "Window", "mentioned_windows", "query_window"]

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "a couple of": 2,
    "a few": 3,
    "several": 3,
}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
_MONTH = r"(?P<{name}>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<{name}>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<{name}>(?:19|20)\d\d)"
_COUNT = r"(?P<count>\d+|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"


def _month(name: str) -> str:
    return _MONTH.replace("{name}", name)


def _day(name: str) -> str:
    return _DAY.replace("{name}", name)


def _year(name: str) -> str:
    return _YEAR.replace("{name}", name)


# "3 May 2022", "May 3, 2022", "3rd of May", "May 3rd"
_DATE = (
    rf"(?:{_day('d1')}\s+(?:of\s+)?{_month('m1')}|{_month('m2')}\s+{_day('d2')}(?![\d:]))"
    rf"(?:,?\s+{_year('y1')})?"
)
_RANGE = re.compile(
    rf"\b(?:between|from)\s+(?:the\s+)?{_day('ra')}\s+(?:and|to|-|until)\s+(?:the\s+)?{_day('rb')}\s+(?:of\s+)?"
    rf"{_month('rm')}(?:,?\s+{_year('ry')})?"
    rf"|\b(?:between|from)\s+{_month('sm')}\s+{_day('sa')}\s+(?:and|to|-|until)\s+(?:{_month('sm2')}\s+)?"
    rf"{_day('sb')}(?:,?\s+{_year('sy')})?",
    re.I,
)
_RELATIVE_TO_DATE = re.compile(
    rf"\b(?:the\s+)?(?P<unit>day|week|weekend|month)\s+(?P<side>after|before|of)\s+(?:the\s+)?{_DATE}", re.I
)
_ONE_DATE = re.compile(rf"\b{_DATE}", re.I)
_MONTH_YEAR = re.compile(
    rf"\b(?:in\s+|during\s+)?(?:early\s+|mid\s+|late\s+)?{_month('m')}\s+(?:of\s+)?{_year('y')}", re.I
)
_BARE_MONTH = re.compile(rf"\b(?:in|during|since|until|by)\s+(?:early\s+|mid\s+|late\s+)?{_month('m')}\b", re.I)
_YEAR_ONLY = re.compile(rf"\b(?:in|during|since|of|year)\s+{_year('y')}\b", re.I)
_AGO = re.compile(rf"\b{_COUNT}\s+(?P<unit>day|week|month|year)s?\s+ago\b", re.I)
_LAST = re.compile(
    r"\b(?P<which>last|this|next|past)\s+(?P<unit>week|weekend|month|year|summer|winter|spring|fall)\b", re.I
)
_DAYWORD = re.compile(r"\b(?P<word>yesterday|today|tonight|tomorrow)\b", re.I)
_SEASONS = {"spring": (3, 5), "summer": (6, 8), "fall": (9, 11), "winter": (12, 2)}


@dataclass(frozen=True)
class Window:
    """``[start, end)``; ``yearly``: the same days of every year (a date written without one)."""

    start: datetime
    end: datetime
    yearly: bool = False

    def overlaps(self, start: datetime, end: datetime) -> bool:
        if not self.yearly:
            return start < self.end and end > self.start
        for year in range(start.year - 1, end.year + 1):
            try:
                shifted = Window(
                    self.start.replace(year=year), self.end.replace(year=year + (self.end.year - self.start.year))
                )
            except ValueError:  # 29 February
                continue
            if shifted.overlaps(start, end):
                return True
        return False

    def as_json(self) -> list[str]:
        return [self.start.isoformat(), self.end.isoformat()]


def _day_window(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None


def _month_window(year: int, month: int) -> Window:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return Window(start, end)


def _count(value: str) -> int:
    return int(value) if value.isdigit() else NUMBER_WORDS.get(value.lower(), 1)


def _date_of(match: re.Match[str], reference: datetime) -> tuple[datetime, bool] | None:
    """The date a ``_DATE`` group names; ``True`` when it had no year (the reference's is used)."""
    day = match.group("d1") or match.group("d2")
    month = _MONTHS[(match.group("m1") or match.group("m2")).lower().rstrip(".")]
    year = match.group("y1")
    moment = _day_window(int(year) if year else reference.year, month, int(day))
    return (moment, year is None) if moment is not None else None


def query_window(text: str, now: datetime) -> Window | None:
    """The time window a question asks about, or None. The first, most specific phrase wins."""
    if found := _RANGE.search(text):
        groups = found.groupdict()
        if groups["ra"]:
            month, first, last, year = (
                _MONTHS[groups["rm"].lower().rstrip(".")],
                groups["ra"],
                groups["rb"],
                groups["ry"],
            )
            end_month = month
        else:
            month, first, last, year = (
                _MONTHS[groups["sm"].lower().rstrip(".")],
                groups["sa"],
                groups["sb"],
                groups["sy"],
            )
            end_month = _MONTHS[groups["sm2"].lower().rstrip(".")] if groups["sm2"] else month
        start = _day_window(int(year) if year else now.year, month, int(first))
        end = _day_window(int(year) if year else now.year, end_month, int(last))
        if start is not None and end is not None and end >= start:
            return Window(start, end + timedelta(days=1), yearly=year is None)
    if found := _RELATIVE_TO_DATE.search(text):
        dated = _date_of(found, now)
        if dated is not None:
            moment, yearly = dated
            unit, side = found.group("unit").lower(), found.group("side").lower()
            span = {"day": 1, "week": 7, "weekend": 3, "month": 31}[unit]
            if side == "after":
                return Window(moment + timedelta(days=1), moment + timedelta(days=1 + span), yearly)
            if side == "before":
                return Window(moment - timedelta(days=span), moment, yearly)
            return Window(moment - timedelta(days=span // 2), moment + timedelta(days=span - span // 2 + 1), yearly)
    if found := _ONE_DATE.search(text):
        dated = _date_of(found, now)
        if dated is not None:
            moment, yearly = dated
            return Window(moment, moment + timedelta(days=1), yearly)
    if found := _MONTH_YEAR.search(text):
        return _month_window(int(found.group("y")), _MONTHS[found.group("m").lower().rstrip(".")])
    if found := _BARE_MONTH.search(text):
        window = _month_window(now.year, _MONTHS[found.group("m").lower().rstrip(".")])
        return Window(window.start, window.end, yearly=True)
    if found := _YEAR_ONLY.search(text):
        year = int(found.group("y"))
        return Window(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    return _relative(text, now)


def _relative(text: str, now: datetime) -> Window | None:
    """ "two years ago", "last month", "yesterday" against ``now`` (day-granular)."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if found := _AGO.search(text):
        days = _count(found.group("count")) * _UNIT_DAYS[found.group("unit").lower()]
        slack = max(1, days // 4)  # "two years ago" is not one exact day
        return Window(today - timedelta(days=days + slack), today - timedelta(days=days - slack - 1))
    if found := _LAST.search(text):
        which, unit = found.group("which").lower(), found.group("unit").lower()
        step = {"last": -1, "past": -1, "this": 0, "next": 1}[which]
        if unit in ("week", "weekend"):
            monday = today - timedelta(days=today.weekday()) + timedelta(weeks=step)
            start = monday + timedelta(days=5) if unit == "weekend" else monday
            return Window(start, monday + timedelta(days=7))
        if unit == "month":
            month_index = today.year * 12 + today.month - 1 + step
            return _month_window(month_index // 12, month_index % 12 + 1)
        if unit == "year":
            return Window(
                datetime(today.year + step, 1, 1, tzinfo=UTC), datetime(today.year + step + 1, 1, 1, tzinfo=UTC)
            )
        first, last = _SEASONS[unit]
        year = today.year + step
        start = datetime(year - (first > last), first, 1, tzinfo=UTC)
        return Window(start, _month_window(year, last).end)
    if found := _DAYWORD.search(text):
        offset = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}[found.group("word").lower()]
        day = today + timedelta(days=offset)
        return Window(day, day + timedelta(days=1))
    return None


def mentioned_windows(text: str, said_at: datetime | None) -> list[Window]:
    """When what a message tells happened, where it says so, resolved against when it was said
    ("yesterday" said on 8 May 2023 is 7 May 2023). At most one window per message: the first."""
    if said_at is None:
        return []
    window = query_window(text, said_at)
    if window is None or window.yearly:
        return []
    return [window]
