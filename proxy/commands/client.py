"""What every HTTP subcommand shares: ``--url``/``--api-key`` (``$MEMPROXY_URL``,
``$MEMPROXY_API_KEY``), one httpx client, and turning an
OpenAI-shaped error answer (or an unreachable proxy) into one readable line and exit code 1."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import httpx

from proxy.config import client_defaults

DEFAULT_URL = "http://127.0.0.1:8080"

Handler = Callable[[argparse.Namespace, httpx.Client], int]


class CommandError(Exception):
    """A failure the user should read: printed as ``memproxy: <message>``, exit code 1."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    url, api_key = client_defaults()
    parser.add_argument(
        "--url", default=url or DEFAULT_URL, help=f"the proxy's base URL (default: $MEMPROXY_URL or {DEFAULT_URL})"
    )
    parser.add_argument(
        "--api-key", default=api_key, help="the proxy's master key, when one is set (default: $MEMPROXY_API_KEY)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for an answer")
    parser.add_argument("--json", action="store_true", help="print the proxy's JSON answer")


def checked(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded; else ``CommandError`` with the proxy's own error message."""
    if response.is_success:
        return response
    response.read()
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    raise CommandError(f"{response.status_code} {message}")


def handler(run: Handler) -> Callable[[argparse.Namespace], int]:
    """Wrap a subcommand: give it a client for ``--url``, report failures on stderr."""

    def command(args: argparse.Namespace) -> int:
        headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        try:
            with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
                return run(args, client)
        except CommandError as exc:
            print(f"memproxy: {exc}", file=sys.stderr)
        except httpx.HTTPError as exc:
            print(f"memproxy: cannot reach the proxy at {args.url}: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"memproxy: {exc}", file=sys.stderr)
        return 1

    return command


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))
