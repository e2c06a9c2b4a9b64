"""A PostgreSQL URL (``memory.database_url``, ``memproxy migrate --to``) as memproxy handles it:
checked once with libpq's own parser, printed without its password, and handed to psycopg as a
conninfo without the password plus the password apart.

Why apart: libpq quotes back the piece of a URL it cannot parse (``invalid percent-encoded token:
"s3cr%zzet"``) and psycopg_pool logs such errors as it retries, so a raw URL given to a pool can
print its password to the logs. A conninfo rebuilt by ``psycopg.conninfo.make_conninfo`` is always
well formed, and the password travels as a keyword argument libpq never echoes.

No message here quotes the URL: callers print ``redacted(url)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

_PASSWORD_PARAMETER = re.compile(r"(password=)[^&\s#]*", re.IGNORECASE)
_HIDDEN = "***"
_DRIVER_LOGGERS = ("psycopg", "psycopg.pool")  # a logger's filters do not see its children's records


class DatabaseUrlError(ValueError):
    """The URL cannot be parsed; the message never quotes it (it may hold a password)."""


def parameters(url: str) -> dict[str, str]:
    """The connection parameters of ``url`` (libpq's parse: ``user``, ``password``, ``host``,
    ``dbname``, query parameters...); ``DatabaseUrlError`` when libpq cannot read it."""
    from psycopg import Error as PsycopgError  # here: only a PostgreSQL store or migrate needs psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        found = conninfo_to_dict(url)
    except (PsycopgError, ValueError):
        raise DatabaseUrlError(
            "is not a valid PostgreSQL URL (postgresql://user:password@host:5432/db); characters such as "
            "@ / % : in the user name or password must be percent-encoded (%40 %2F %25 %3A)"
        ) from None
    return {key: str(value) for key, value in found.items() if value is not None}


def split(url: str) -> tuple[str, str | None]:
    """``url`` as a conninfo string without the password, and the password (None when it has none:
    libpq then reads ``PGPASSWORD`` or ``~/.pgpass``). Give them to psycopg as
    ``connect(conninfo, password=password)`` (a pool: ``kwargs={"password": password}``)."""
    from psycopg.conninfo import make_conninfo

    found = parameters(url)
    password = found.pop("password", None)
    return make_conninfo("", **found), password


def redacted(url: str) -> str:
    """``url`` to print: the password of ``user:password@`` and of ``?password=`` replaced by
    ``***``. It works on text libpq cannot parse too: everything between the user name and the
    last ``@`` is hidden, so an unencoded ``@`` or ``/`` in a password cannot let part of it out."""
    scheme, separator, rest = url.partition("://")
    if separator:
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.partition(':')[0]}:{_HIDDEN}@{host}"
        url = f"{scheme}{separator}{rest}"
    return _PASSWORD_PARAMETER.sub(rf"\g<1>{_HIDDEN}", url)


class _Hiding(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self._secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self._secret in text:
            record.msg, record.args = text.replace(self._secret, _HIDDEN), ()
        return True


@contextmanager
def hidden_in_logs(password: str | None) -> Iterator[None]:
    """While inside: ``password`` replaced by ``***`` in what psycopg and its pool log (a pool
    logs each failed attempt to connect with libpq's message). Nothing to hide when None."""
    if not password:
        yield
        return
    hiding = _Hiding(password)
    loggers = [logging.getLogger(name) for name in _DRIVER_LOGGERS]
    for logger in loggers:
        logger.addFilter(hiding)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(hiding)
