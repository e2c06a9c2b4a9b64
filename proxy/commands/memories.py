"""``memproxy memories add|search|list|get|edit|delete|history``: the memory API from a terminal."""

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


def _owner(args: argparse.Namespace) -> dict[str, str]:
    return {"space": args.space} if args.space else {"user": args.user}


def _add(args: argparse.Namespace, client: httpx.Client) -> int:
    if not args.text and not args.fact:
        raise CommandError("nothing to add: give the text of a message, or --fact TEXT")
    body: dict[str, Any] = {**_owner(args), "sync": not args.queue}
    if args.text:
        body["messages"] = [{"role": "user", "content": text} for text in args.text]
    if args.fact:
        body["facts"] = args.fact
    if args.mode:
        body["mode"] = args.mode
    answer = checked(client.post("/v1/memories", json=body)).json()
    if args.json:
        print_json(answer)
    elif answer["status"] != "done":
        print(f"queued as {answer['exchange_id']}: searchable once write-back has distilled it")
    else:
        for change in answer["results"]:
            print(f"{change['event']:<6} {change['id']}  {_one_line(change['text'])}")
        if not answer["results"]:
            print("nothing worth remembering in that (try --mode raw, or --fact)")
    return 0


def _search(args: argparse.Namespace, client: httpx.Client) -> int:
    body: dict[str, Any] = {**_owner(args), "query": args.query, "top_k": args.top_k}
    if args.budget is not None:
        body["token_budget"] = args.budget
    answer = checked(client.post("/v1/memories/search", json=body)).json()
    if args.json:
        print_json(answer)
        return 0
    for result in answer["results"]:
        print(f"{result['score']:6.3f}  {result['id']}  {result['block']:<8}  {_one_line(result['text'], 80)}")
    print(f"{len(answer['results'])} memories, {answer['tokens']} tokens" if answer["results"] else "no memories")
    return 0


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
    params = {"purge": "true", **({"by_source": "true"} if args.by_source else {})} if args.purge else None
    if args.by_source and not args.purge:
        raise CommandError("--by-source removes memories for good: give --purge too")
    answer = checked(client.delete(_path(args.id), params=params)).json()
    if args.json:
        print_json(answer)
    elif args.by_source:
        print(f"purged {args.id} and the memories sharing its source messages: {' '.join(answer['ids'])}")
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

    add = actions.add_parser("add", help="remember what a user said (distilled like chat), or facts as they are")
    add.add_argument("text", nargs="*", help="messages of the user, distilled by the extraction mode")
    add.add_argument("--fact", action="append", help="repeatable: a memory stored as written")
    add.add_argument("--mode", choices=("raw", "heuristic", "llm"), help="extraction for this add (default: config)")
    add.add_argument("--queue", action="store_true", help="answer at once, distil in the background (default: wait)")
    add.set_defaults(run=handler(_add))

    search = actions.add_parser("search", help="what chat would inject for a message, best first")
    search.add_argument("query", help="the message to find memories for")
    search.add_argument("--top-k", type=int, default=12, help="most memories (default 12)")
    search.add_argument("--budget", type=int, help="cl100k tokens of memories (default: the proxy's token_budget)")
    search.set_defaults(run=handler(_search))

    listing = actions.add_parser("list", help="a user's or space's memories, newest first")
    listing.add_argument("--state", action="append", choices=STATES, help="repeatable; default active")
    listing.add_argument("--tag", help="only memories with this tag")
    listing.add_argument("--since", help="created at or after (ISO 8601)")
    listing.add_argument("--until", help="created before (ISO 8601)")
    listing.add_argument("--limit", type=int, default=50, help="memories per page (default 50, at most 500)")
    listing.add_argument("--cursor", help="next page: the cursor the previous page printed")
    listing.set_defaults(run=handler(_list))

    for parser in (add, search, listing):
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--user", help="the memory owner (the chat requests' `user`)")
        owner.add_argument("--space", help="an explicit space: user:<id>, org:<name> or agent:<name>")

    show = actions.add_parser("get", help="one memory, every field")
    show.add_argument("id", help="the memory's id")
    show.set_defaults(run=handler(_get))

    edit = actions.add_parser("edit", help="change a memory: a new version, the old one stays in its history")
    edit.add_argument("id", help="the memory's id")
    edit.add_argument("--content", help="the new text")
    edit.add_argument("--tag", dest="tags", action="append", help="repeatable: the new tag list")
    edit.add_argument("--no-tags", action="store_true", help="remove every tag")
    pin = edit.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="pinned", action="store_const", const=True, help="always inject it")
    pin.add_argument("--unpin", dest="pinned", action="store_const", const=False, help="let heat decide again")
    for flag in ("--expires-at", "--valid-from", "--valid-to"):
        edit.add_argument(flag, help="ISO 8601 time, or `none` to clear")
    edit.set_defaults(run=handler(_edit))

    delete = actions.add_parser("delete", help="soft delete (history kept), or --purge to remove for good")
    delete.add_argument("id", help="the memory's id")
    delete.add_argument("--purge", action="store_true", help="remove it and its history everywhere")
    delete.add_argument(
        "--by-source", action="store_true", help="with --purge: also the memories derived from its source messages"
    )
    delete.set_defaults(run=handler(_delete))

    history = actions.add_parser("history", help="every version and event of a memory")
    history.add_argument("id", help="the memory's id")
    history.set_defaults(run=handler(_history))

    for parser in (add, search, listing, show, edit, delete, history):
        add_connection_arguments(parser)
