"""Time in words: the windows questions name and the dates messages mention."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memcubes.timewords import Window, mentioned_windows, query_window

NOW = datetime(2023, 5, 8, 13, 0, tzinfo=UTC)


def day(year: int, month: int, dom: int) -> datetime:
    return datetime(year, month, dom, tzinfo=UTC)


@pytest.mark.parametrize(
    ("question", "window"),
    [
        ("What did Melanie do in March 2021?", Window(day(2021, 3, 1), day(2021, 4, 1))),
        ("Who did Maria have dinner with on May 3, 2023?", Window(day(2023, 5, 3), day(2023, 5, 4))),
        ("Who came on the 3rd of May 2023?", Window(day(2023, 5, 3), day(2023, 5, 4))),
        ("What happened between 3 and 9 May 2022?", Window(day(2022, 5, 3), day(2022, 5, 10))),
        ("What happened from May 3 to May 9, 2022?", Window(day(2022, 5, 3), day(2022, 5, 10))),
        ("What did John do the week after 2 October?", Window(day(2023, 10, 3), day(2023, 10, 10), yearly=True)),
        ("What did he do the week before 9 June 2023?", Window(day(2023, 6, 2), day(2023, 6, 9))),
        ("What did Gina do in January?", Window(day(2023, 1, 1), day(2023, 2, 1), yearly=True)),
        ("What did she do last month?", Window(day(2023, 4, 1), day(2023, 5, 1))),
        ("What happened in 2022?", Window(day(2022, 1, 1), day(2023, 1, 1))),
        ("What did I eat yesterday?", Window(day(2023, 5, 7), day(2023, 5, 8))),
        ("When did Caroline go to the support group?", None),
        ("The 5 kids are fun", None),
    ],
)
def test_query_windows(question: str, window: Window | None) -> None:
    assert query_window(question, NOW) == window


def test_two_years_ago_is_a_window_around_that_day() -> None:
    window = query_window("What did he buy two years ago?", NOW)
    assert window is not None and window.start < day(2021, 5, 8) < window.end


def test_a_yearly_window_matches_the_same_days_of_any_year() -> None:
    window = Window(day(2026, 10, 3), day(2026, 10, 10), yearly=True)
    assert window.overlaps(day(2019, 10, 5), day(2019, 10, 6))
    assert not window.overlaps(day(2019, 11, 5), day(2019, 11, 6))


def test_a_message_mentions_when_it_happened_relative_to_when_it_was_said() -> None:
    [went] = mentioned_windows("I went to the LGBTQ support group yesterday.", NOW)
    assert went == Window(day(2023, 5, 7), day(2023, 5, 8))
    assert mentioned_windows("I love painting sunsets.", NOW) == []
    assert mentioned_windows("We met in January.", NOW) == []  # no year: no fixed time
    assert mentioned_windows("yesterday", None) == []
