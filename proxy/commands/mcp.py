"""``memproxy mcp --stdio``: memproxy's MCP server for hosts that speak only stdio (Claude Desktop's
local servers, many IDEs). Each JSON-RPC message read from stdin (framed by the official SDK's
stdio transport) is posted to the proxy's ``/mcp`` with the key and the owner as headers, and the
answer is written back; so the stdio server is exactly the HTTP one, with the same scoping."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import anyio
import httpx
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from proxy.commands.client import DEFAULT_URL

_ACCEPT = "application/json, text/event-stream"


def _error(request_id: Any, message: str) -> SessionMessage:
    error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": message}}
    return SessionMessage(types.jsonrpc_message_adapter.validate_python(error, by_name=False))


async def bridge(url: str, *, api_key: str | None, user: str | None) -> None:
    headers = {"accept": _ACCEPT, "content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if user:
        headers["x-memory-user"] = user.encode().decode("latin-1")  # UTF-8 bytes on the wire
    endpoint = url.rstrip("/") + "/mcp"
    async with stdio_server() as (read_stream, write_stream), httpx.AsyncClient(headers=headers, timeout=300) as http:
        async for incoming in read_stream:
            if isinstance(incoming, Exception):
                continue
            message = incoming.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
            request_id = message.get("id")
            try:
                response = await http.post(endpoint, json=message)
            except httpx.HTTPError as exc:
                if request_id is not None:
                    await write_stream.send(_error(request_id, f"memproxy at {url} is unreachable: {exc}"))
                continue
            if response.status_code >= 400 or not response.content:
                if request_id is not None and response.status_code >= 400:
                    await write_stream.send(
                        _error(request_id, f"memproxy answered {response.status_code}: {response.text[:500]}")
                    )
                continue
            answer = response.json()
            if message.get("method") == "initialize" and isinstance(answer.get("result"), dict):
                version = answer["result"].get("protocolVersion")
                if isinstance(version, str):
                    http.headers["mcp-protocol-version"] = version
            for item in answer if isinstance(answer, list) else [answer]:
                await write_stream.send(
                    SessionMessage(types.jsonrpc_message_adapter.validate_python(item, by_name=False))
                )


def cmd_mcp(args: argparse.Namespace) -> int:
    if not args.stdio:
        print(
            "memproxy: the MCP server is served over HTTP at <proxy>/mcp; --stdio bridges it to stdio", file=sys.stderr
        )
        return 1
    anyio.run(lambda: bridge(args.url, api_key=args.api_key, user=args.user))
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser("mcp", help="serve memproxy's MCP memory tools over stdio (for desktop hosts)")
    parser.add_argument("--stdio", action="store_true", help="speak MCP on stdin/stdout")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the proxy's base URL (default {DEFAULT_URL})")
    parser.add_argument("--api-key", help="the proxy's key, when one is set")
    parser.add_argument("--user", help="whose memories (sent as X-Memory-User)")
    parser.set_defaults(run=cmd_mcp)
