"""``memproxy keys create|list|revoke``: API keys of a running proxy (``--api-key`` is its master key)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

import httpx

from proxy.commands.client import CommandError, add_connection_arguments, checked, handler, print_json


def _row(key: dict[str, Any]) -> str:
    who = f"user={key['user']}" if key.get("user") else f"user_prefix={key.get('user_prefix')!r}"
    state = "revoked" if key.get("revoked_at") else f"expires {key['expires_at'][:19]}" if key.get("expires_at") else ""
    shared = ",".join(key.get("read_spaces") or [])
    parts = [key["id"], key.get("alias") or "-", who, f"memory_api={key['memory_api']}"]
    parts += [f"reads={shared}"] if shared else []
    parts += [f"rpm={key['rpm']}"] if key.get("rpm") else []
    return "  ".join([*parts, state]).rstrip()


def _create(args: argparse.Namespace, client: httpx.Client) -> int:
    body: dict[str, Any] = {"memory_api": args.memory_api}
    for name in ("user", "user_prefix", "expires_at", "rpm", "alias"):
        if (value := getattr(args, name)) is not None:
            body[name] = value
    for name in ("read_spaces", "write_spaces", "models"):
        if (value := getattr(args, name)) is not None:
            body[name] = value
    if args.metadata is not None:
        try:
            body["metadata"] = json.loads(args.metadata)
        except ValueError as exc:
            raise CommandError(f"--metadata is not JSON: {exc}") from None
    key = checked(client.post("/v1/keys", json=body)).json()
    if args.json:
        print_json(key)
    else:
        print(_row(key))
        print(f"key: {key['key']}  (shown once: store it now)")
    return 0


def _list(args: argparse.Namespace, client: httpx.Client) -> int:
    keys = checked(client.get("/v1/keys")).json()
    if args.json:
        print_json(keys)
        return 0
    for key in keys["data"]:
        print(_row(key))
    if not keys["data"]:
        print("no keys")
    return 0


def _revoke(args: argparse.Namespace, client: httpx.Client) -> int:
    key = checked(client.delete(f"/v1/keys/{quote(args.id, safe='')}")).json()
    if args.json:
        print_json(key)
    else:
        print(f"revoked {key['id']}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("keys", help="create, list and revoke API keys (needs the master key)")
    actions = group.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="a key bound to a user, or to a user prefix")
    owner = create.add_mutually_exclusive_group()
    owner.add_argument("--user", help="the key acts for exactly this user")
    owner.add_argument("--user-prefix", help='the key acts for users whose id starts with this ("" = any user)')
    create.add_argument("--read-space", dest="read_spaces", action="append", help="shared space it reads (repeat)")
    create.add_argument("--write-space", dest="write_spaces", action="append", help="shared space it writes (repeat)")
    create.add_argument("--memory-api", choices=("none", "read", "write"), default="write")
    create.add_argument("--model", dest="models", action="append", help="allowed model (repeat; default all)")
    create.add_argument("--expires-at", help="ISO 8601 time")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--alias")
    create.add_argument("--metadata", help="a JSON object kept with the key")
    create.set_defaults(run=handler(_create))

    listing = actions.add_parser("list", help="every key and its settings (never the secrets)")
    listing.set_defaults(run=handler(_list))

    revoke = actions.add_parser("revoke", help="refuse a key from its next request on")
    revoke.add_argument("id")
    revoke.set_defaults(run=handler(_revoke))

    for parser in (create, listing, revoke):
        add_connection_arguments(parser)
