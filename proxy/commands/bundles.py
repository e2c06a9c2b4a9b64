"""``memproxy export`` and ``memproxy import``: move a space between proxies (or in from mem0 and
MemOS) through the running proxy's bundle endpoints."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tqdm import tqdm

from proxy.commands.client import CommandError, add_connection_arguments, checked, handler, print_json
from proxy.routes.bundles import IMPORT_PATH, PROGRESS_TYPE, bundle_filename

_FORMATS = ("auto", "memproxy", "mem0", "memos")
_CONFLICTS = ("skip", "overwrite", "new-ids")
_CHUNK = 256 * 1024


def _bar(description: str, total: int | None) -> tqdm[bytes]:
    """Bytes moved, on stderr and only on a terminal."""
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, disable=None)


def _summary(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    counts = manifest.get("counts", {})
    states = ", ".join(f"{n} {state}" for state, n in counts.get("states", {}).items()) or "none"
    return (
        f"wrote {path}: space {manifest['space']}, {counts.get('cubes', 0)} memories ({states}), "
        f"{counts.get('history', 0)} history events, {counts.get('embeddings', 0)} embeddings"
    )


def _export(args: argparse.Namespace, client: httpx.Client) -> int:
    target = Path(args.output or bundle_filename(args.space))
    partial = target.with_name(target.name + ".part")
    with client.stream("GET", f"/v1/spaces/{quote(args.space, safe=':/')}/export") as response:
        checked(response)
        size = int(response.headers.get("content-length") or 0) or None
        with partial.open("wb") as file, _bar("exporting", size) as bar:
            for chunk in response.iter_bytes():
                file.write(chunk)
                bar.update(len(chunk))
    os.replace(partial, target)  # never leave a truncated bundle under the real name
    print(json.dumps({"path": str(target)}) if args.json else _summary(target))
    return 0


def _zipped(folder: Path) -> bytes:
    """A MemOS dump directory as the zip the import endpoint takes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _import(args: argparse.Namespace, client: httpx.Client) -> int:
    source = Path(args.file)
    data = _zipped(source) if source.is_dir() else source.read_bytes()
    params = {"on_conflict": args.on_conflict, "format": args.format}
    if args.space:
        params["space"] = args.space
    content_type = "application/zip" if data[:2] == b"PK" else "application/json"
    headers = {"content-type": content_type, "content-length": str(len(data)), "accept": PROGRESS_TYPE}
    with _bar("uploading", len(data)) as bar:

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(data), _CHUNK):
                bar.update(min(_CHUNK, len(data) - start))
                yield data[start : start + _CHUNK]

        with client.stream("POST", IMPORT_PATH, params=params, content=chunks(), headers=headers) as response:
            report = _followed(checked(response))
    if args.json:
        print_json(report)
        return 0
    print(
        f"imported {report['imported']} memories into {report['space']} from a {report['format']} file "
        f"({report['overwritten']} overwritten, "
        f"{report['skipped']} skipped, {report['quarantined']} quarantined, {report['history']} history events; "
        f"embeddings: {report['vectors_reused']} reused, {report['vectors_embedded']} computed)"
    )
    for reason, count in report["skipped_because"].items():
        print(f"skipped {count} ({reason}): {report['reasons'].get(reason, '')}")
    return 0


def _followed(response: httpx.Response) -> dict[str, Any]:
    """Read the import's progress lines, reporting them on stderr (``memories written/total``),
    and return its last line, the reply; an error line fails the command."""
    last: dict[str, Any] = {}
    with tqdm(desc="importing", unit=" memories", disable=None) as bar:
        for line in response.iter_lines():
            if not line.strip():
                continue
            last = json.loads(line)
            if last.get("object") != "import.progress":
                break
            bar.total = last["total"]
            bar.n = last["done"]
            bar.refresh()
            if bar.disable:  # not a terminal: one plain line each, for logs and pipes
                print(f"importing: {last['done']}/{last['total']} memories", file=sys.stderr, flush=True)
    if "error" in last:
        raise CommandError(str(last["error"].get("message", "the import failed")))
    if last.get("object") != "import":
        raise CommandError("the proxy's answer ended before the import did")
    return last


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = subparsers.add_parser("export", help="write a space as a portable .memcube bundle")
    export.add_argument("--space", required=True, help="the space: user:<id>, org:<name> or agent:<name>")
    export.add_argument("-o", "--output", help="the file to write (default: <space>.memcube)")
    export.set_defaults(run=handler(_export))

    load = subparsers.add_parser("import", help="import a .memcube bundle, a mem0 export or a MemOS dump")
    load.add_argument("file", help="a .memcube file, a mem0 get_all JSON, or a MemOS dump (directory or zip)")
    load.add_argument("--space", help="the space to import into (default: the bundle's own; required for mem0/MemOS)")
    load.add_argument(
        "--on-conflict",
        choices=_CONFLICTS,
        default="skip",
        help="a memory whose id the target space already holds: skip it (default), overwrite it, or copy "
        "everything under new ids; ids held by another space are always copied under new ids",
    )
    load.add_argument("--format", choices=_FORMATS, default="auto", help="the file's format (default: recognised)")
    load.set_defaults(run=handler(_import))

    for parser in (export, load):
        add_connection_arguments(parser)
