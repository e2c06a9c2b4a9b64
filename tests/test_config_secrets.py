"""A configuration error never quotes a secret back (it ends up in logs): a malformed
``memory.database_url`` is refused with a sentence that names the setting, not its password; the
same rule holds for every setting whose name says it may hold one (keys, tokens, headers)."""

from __future__ import annotations

import pytest

from memcubes.database_url import DatabaseUrlError, redacted, split
from proxy.config import ConfigError, Settings

PASSWORD = "s3cr%zzet"


def problems(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping(data, env={})
    return str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://memproxy:{PASSWORD}@db.internal/memproxy",  # libpq quotes the bad token back
        f"mysql://memproxy:{PASSWORD}@db.internal/memproxy",
        f"postgresql://db.internal/memproxy?password={PASSWORD}&port=notaport&sslmode=%zz",
    ],
)
def test_a_bad_database_url_is_refused_without_its_password(url: str) -> None:
    report = problems({"memory": {"database_url": url}})
    assert "memory.database_url" in report
    assert PASSWORD not in report and "zzet" not in report


def test_secret_settings_are_never_echoed() -> None:
    report = problems(
        {
            "general_settings": {"master_key": ["sk-master-not-a-string"]},
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {"model": "openai/x", "api_key": ["sk-provider"], "extra_headers": "Bearer t0k"},
                }
            ],
        }
    )
    assert "general_settings.master_key" in report and "api_key" in report and "extra_headers" in report
    assert "sk-master" not in report and "sk-provider" not in report and "t0k" not in report
    assert "(got 'many')" in problems({"general_settings": {"max_messages": "many"}})  # others still are


def test_a_valid_url_is_accepted_and_split_from_its_password() -> None:
    url = "postgresql://app:p%40ss@db.internal:5433/memproxy?sslmode=require"
    assert Settings.from_mapping({"memory": {"database_url": url}}, env={}).memory.database_url == url
    conninfo, password = split(url)
    assert password == "p@ss" and "p@ss" not in conninfo and "p%40ss" not in conninfo
    assert "host=db.internal" in conninfo and "sslmode=require" in conninfo
    assert split("postgresql://app@/memproxy?host=/run/postgresql") == (
        "user=app dbname=memproxy host=/run/postgresql",
        None,
    )
    with pytest.raises(DatabaseUrlError) as caught:
        split(f"postgresql://app:{PASSWORD}@h/db")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw@h:5432/db", "postgresql://app:***@h:5432/db"),
        ("postgresql://app:p/w@x@h/db?sslmode=require", "postgresql://app:***@h/db?sslmode=require"),
        ("postgresql://app@h/db?sslmode=require&password=pw", "postgresql://app@h/db?sslmode=require&password=***"),
        (f"postgresql://app:{PASSWORD}@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app@/db?host=/run/postgresql", "postgresql://app@/db?host=/run/postgresql"),
    ],
)
def test_redacted_drops_the_password_wherever_it_is(url: str, shown: str) -> None:
    assert redacted(url) == shown
