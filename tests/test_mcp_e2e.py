"""memproxy as an MCP server: the official ``mcp`` client over streamable HTTP (and over stdio
through ``memproxy mcp --stdio``) lists the tools, adds, searches, edits and deletes memories,
and never reaches another user's."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import Backend, Proxy, proxy_settings

TOOLS = {"search_memories", "add_memory", "list_memories", "update_memory", "delete_memory", "memory_history"}


@pytest.fixture
def keyed_proxy(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> Proxy:
    return start_proxy(proxy_settings(backend.url, tmp_path / "data", general_settings={"master_key": "sk-test"}))


def http_client(proxy: Proxy, *, user: str | None, key: str = "sk-test") -> Client:
    headers = {"authorization": f"Bearer {key}", **({"X-Memory-User": user} if user else {})}
    transport = streamable_http_client(f"{proxy.url}/mcp", http_client=httpx2.AsyncClient(headers=headers))
    return Client(transport)


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text) if result.structured_content is None else result.structured_content


async def test_tools_over_streamable_http_scoped_to_the_caller(keyed_proxy: Proxy) -> None:
    async with http_client(keyed_proxy, user="alice") as alice:
        tools = await alice.list_tools()
        assert {tool.name for tool in tools.tools} == TOOLS
        assert all(len(tool.description or "") > 60 for tool in tools.tools)
        added = payload(await alice.call_tool("add_memory", {"text": "The user is allergic to peanuts."}))
        memory_id = added["result"][0]["id"]
        found = payload(await alice.call_tool("search_memories", {"query": "what food allergies?"}))
        assert found["result"][0]["id"] == memory_id and "peanuts" in found["result"][0]["text"]
        edited = payload(
            await alice.call_tool("update_memory", {"memory_id": memory_id, "text": "The user is allergic to cashews."})
        )
        assert "cashews" in edited["content"]
        listed = payload(await alice.call_tool("list_memories", {}))
        assert [m["content"] for m in listed["memories"]] == ["The user is allergic to cashews."]
        history = payload(await alice.call_tool("memory_history", {"memory_id": edited["id"]}))
        assert len(history["result"]) >= 2

    async with http_client(keyed_proxy, user="mallory") as mallory:
        assert payload(await mallory.call_tool("search_memories", {"query": "allergies"}))["result"] == []
        assert payload(await mallory.call_tool("list_memories", {}))["memories"] == []
        for tool in ("update_memory", "delete_memory", "memory_history"):
            arguments = (
                {"memory_id": edited["id"], "text": "hacked"}
                if tool == "update_memory"
                else {"memory_id": edited["id"]}
            )
            result = await mallory.call_tool(tool, arguments)
            assert result.is_error and "not found" in result.content[0].text

    async with http_client(keyed_proxy, user="alice") as alice:
        with pytest.raises(MCPError):
            await alice.read_resource("memory://mallory/stable")
        payload(await alice.call_tool("delete_memory", {"memory_id": edited["id"]}))
        assert payload(await alice.call_tool("search_memories", {"query": "allergies"}))["result"] == []


async def test_key_and_owner_are_required(keyed_proxy: Proxy) -> None:
    response = httpx.post(f"{keyed_proxy.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    async with http_client(keyed_proxy, user=None) as anonymous:
        result = await anonymous.call_tool("search_memories", {"query": "anything"})
    assert result.is_error and "X-Memory-User" in result.content[0].text


async def test_stdio_bridge(keyed_proxy: Proxy) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "proxy.cli", "mcp", "--stdio", "--url", keyed_proxy.url, "--api-key", "sk-test", "--user", "dana"],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    async with Client(params) as dana:
        assert {tool.name for tool in (await dana.list_tools()).tools} == TOOLS
        added = payload(await dana.call_tool("add_memory", {"text": "The user's cat is called Miso."}))
        found = payload(await dana.call_tool("search_memories", {"query": "cat name"}))
        assert found["result"][0]["id"] == added["result"][0]["id"]
        payload(await dana.call_tool("delete_memory", {"memory_id": added["result"][0]["id"]}))


async def test_the_stable_block_as_a_resource(keyed_proxy: Proxy) -> None:
    async with http_client(keyed_proxy, user="erin") as erin:
        added = payload(await erin.call_tool("add_memory", {"text": "The user is vegetarian."}))
    with keyed_proxy.http() as http:  # pinned memories are always in the stable block
        assert http.patch(f"/v1/memories/{added['result'][0]['id']}", json={"pinned": True}).status_code == 200
    async with http_client(keyed_proxy, user="erin") as erin:
        templates = await erin.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == ["memory://{user}/stable"]
        stable = (await erin.read_resource("memory://erin/stable")).contents[0].text
    assert stable.startswith("<memories>") and "The user is vegetarian." in stable


async def test_another_keys_memories_are_unreachable(keyed_proxy: Proxy) -> None:
    """A key bound to bob reaches only bob's memories through MCP, as on the REST API."""
    with keyed_proxy.http() as http:
        bob_key = http.post("/v1/keys", json={"user": "bob"}).json()["key"]
    async with http_client(keyed_proxy, user="alice") as alice:
        added = payload(await alice.call_tool("add_memory", {"text": "The user's PIN is 4321."}))
    alice_memory = added["result"][0]["id"]
    async with http_client(keyed_proxy, user=None, key=bob_key) as bob:
        assert payload(await bob.call_tool("search_memories", {"query": "PIN"}))["result"] == []
        for tool in ("update_memory", "delete_memory", "memory_history"):
            arguments: dict[str, Any] = {"memory_id": alice_memory}
            if tool == "update_memory":
                arguments["text"] = "hacked"
            result = await bob.call_tool(tool, arguments)
            assert result.is_error and f"no memory with id {alice_memory}" in result.content[0].text
        with pytest.raises(MCPError):
            await bob.read_resource("memory://alice/stable")
    async with http_client(keyed_proxy, user="alice", key=bob_key) as bob_as_alice:
        result = await bob_as_alice.call_tool("search_memories", {"query": "PIN"})
        assert result.is_error and "may not act for user" in result.content[0].text
    async with http_client(keyed_proxy, user="alice") as alice:
        found = payload(await alice.call_tool("search_memories", {"query": "PIN"}))
        assert found["result"][0]["id"] == alice_memory
