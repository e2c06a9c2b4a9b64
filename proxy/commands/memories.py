"""``memproxy memories list|get|edit|delete|history``: the management API from a terminal."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

import httpx

from proxy.commands.client import CommandError, add_connection_arguments, checked, handler, print_json

STATES = ("active", "archived", "superseded", "deleted")
_WIDTH = 100


def _path(memory_id: str, suffix: str = "") -> str:
    return f"/v1/memories/{quote(memory_id, safe='')}{suffix}"


def _one_line(text: str, width: int = _WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _day(memory: dict[str, Any]) -> str:
    return str(memory.get("valid_from") or memory.get("created_at") or "")[:10]


def _row(memory: dict[str, Any]) -> str:
    pin = "[pinned] " if memory.get("pinned") else ""
    state, version = memory["state"], f"v{memory['version']}"
    return f"{memory['id']}  {state:<10}  {version:<4} {_day(memory)}  {pin}{_one_line(memory['content'])}"


def describe(memory: dict[str, Any]) -> str:
    """A memory as aligned ``field  value`` lines, the fields a person looks for first."""
    valid = f"{memory.get('valid_from') or '?'} -> {memory.get('valid_to') or 'open'}"
    fields = [
        ("id", memory["id"]),
        ("space", memory["space"]),
        ("state", memory["state"]),
        ("version", memory["version"]),
        ("content", memory["content"]),
        ("valid", valid),
        ("created_at", memory.get("created_at")),
        ("updated_at", memory.get("updated_at")),
        ("tags", ", ".join(memory.get("tags") or []) or "-"),
        ("pinned", "yes" if memory.get("pinned") else "no"),
        ("expires_at", memory.get("expires_at") or "never"),
        ("confidence", memory.get("confidence")),
        ("sources", ", ".join(memory.get("sources") or []) or "-"),
        ("supersedes", memory.get("supersedes") or "-"),
        ("superseded_by", memory.get("superseded_by") or "-"),
    ]
    return "\n".join(f"{name:<14}{value}" for name, value in fields)


def _show(memory: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(memory)
    else:
        print(describe(memory))


def _list(args: argparse.Namespace, client: httpx.Client) -> int:
    params: list[tuple[str, str]] = [("limit", str(args.limit))]
    params += [
        (name, value) for name in ("user", "space", "tag", "since", "until", "cursor") if (value := getattr(args, name))
    ]
    params += [("state", state) for state in args.state or ()]
    page = checked(client.get("/v1/memories", params=tuple(params))).json()
    if args.json:
        print_json(page)
        return 0
    for memory in page["data"]:
        print(_row(memory))
    if not page["data"]:
        print("no memories")
    if page.get("has_more"):
        print(f"more: --cursor {page['next_cursor']}")
    return 0


def _get(args: argparse.Namespace, client: httpx.Client) -> int:
    memory = checked(client.get(_path(args.id))).json()
    _show(memory, as_json=args.json)
    return 0


def _time_or_none(value: str) -> str | None:
    """``none`` clears a time field."""
    return None if value.lower() in ("none", "null", "") else value


def _edit(args: argparse.Namespace, client: httpx.Client) -> int:
    changes: dict[str, Any] = {}
    if args.content is not None:
        changes["content"] = args.content
    if args.tags is not None or args.no_tags:
        changes["tags"] = [] if args.no_tags else args.tags
    if args.pinned is not None:
        changes["pinned"] = args.pinned
    for field in ("expires_at", "valid_from", "valid_to"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = _time_or_none(value)
    if not changes:
        raise CommandError("nothing to change: give --content, --tag, --no-tags, --pin, --unpin or a time")
    memory = checked(client.patch(_path(args.id), json=changes)).json()
    _show(memory, as_json=args.json)
    return 0


def _delete(args: argparse.Namespace, client: httpx.Client) -> int:
    answer = checked(client.delete(_path(args.id), params={"purge": "true"} if args.purge else None)).json()
    if args.json:
        print_json(answer)
    else:
        print(f"purged {args.id}" if args.purge else f"deleted {args.id} (history kept; --purge removes it for good)")
    return 0


def _history(args: argparse.Namespace, client: httpx.Client) -> int:
    events = checked(client.get(_path(args.id, "/history"))).json()["data"]
    if args.json:
        print_json(events)
        return 0
    for event in events:
        memory = event["memory"]
        reason = f"  ({event['reason']})" if event.get("reason") else ""
        print(
            f"{event['at'][:19]}  {event['event']:<9} v{memory['version']:<3} {memory['state']:<10} "
            f"{_one_line(memory['content'], 80)}{reason}"
        )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("memories", help="list, show, edit and delete the memories of a running proxy")
    actions = group.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", help="a user's or space's memories, newest first")
    owner = listing.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", help="the memory owner (the chat requests' `user`)")
    owner.add_argument("--space", help="an explicit space, e.g. user:alice")
    listing.add_argument("--state", action="append", choices=STATES, help="repeatable; default active")
    listing.add_argument("--tag")
    listing.add_argument("--since", help="created at or after (ISO 8601)")
    listing.add_argument("--until", help="created before (ISO 8601)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="next page: the cursor the previous page printed")
    listing.set_defaults(run=handler(_list))

    show = actions.add_parser("get", help="one memory, every field")
    show.add_argument("id")
    show.set_defaults(run=handler(_get))

    edit = actions.add_parser("edit", help="change a memory: a new version, the old one stays in its history")
    edit.add_argument("id")
    edit.add_argument("--content")
    edit.add_argument("--tag", dest="tags", action="append", help="repeatable: the new tag list")
    edit.add_argument("--no-tags", action="store_true", help="remove every tag")
    pin = edit.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="pinned", action="store_const", const=True, help="always inject it")
    pin.add_argument("--unpin", dest="pinned", action="store_const", const=False)
    for flag in ("--expires-at", "--valid-from", "--valid-to"):
        edit.add_argument(flag, help="ISO 8601 time, or `none` to clear")
    edit.set_defaults(run=handler(_edit))

    delete = actions.add_parser("delete", help="soft delete (history kept), or --purge to remove for good")
    delete.add_argument("id")
    delete.add_argument("--purge", action="store_true")
    delete.set_defaults(run=handler(_delete))

    history = actions.add_parser("history", help="every version and event of a memory")
    history.add_argument("id")
    history.set_defaults(run=handler(_history))

    for parser in (listing, show, edit, delete, history):
        add_connection_arguments(parser)
