"""``/mcp``: memproxy's memory as an MCP server (streamable HTTP, the official ``mcp`` SDK).

MCP hosts (Claude Desktop, IDEs, agent frameworks) give their model tools to search, add, list,
edit and delete its user's memories, and the user's stable block as a resource. The caller is who
the HTTP request says: the API key is checked exactly as on the REST API (``proxy.auth.principal``,
once per HTTP request), and the owner is the ``X-Memory-User`` header the host was configured with
(or the user a user-bound key acts for), never a tool argument, so a model cannot reach another
user's memories; every tool goes through the memory service with the caller's ``Principal``, and a
memory id outside the acting user's space is "not found".

Stateless and JSON-answered: every call is one HTTP request carrying its own key, so nothing ties
a session to a process. ``memproxy mcp --stdio`` bridges hosts that speak only stdio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from memcubes import layout
from memcubes.errors import MemoryOSError
from proxy.auth import principal
from proxy.errors import ProxyError, error_body, from_memory_error
from proxy.memory_slots import MemorySlots
from proxy.principal import Principal
from proxy.protocol import AddMemoriesRequest, SearchRequest
from proxy.scope import memory_user_header, user_space
from proxy.serving.memories import MemoryService

PATH = "/mcp"

INSTRUCTIONS = (
    "Long-term memory about the user you are helping. Search it before answering anything that may "
    "depend on who the user is, what they said before, or their preferences; add what they tell you "
    "that will matter in later conversations; correct or delete what they say is wrong."
)


def _caller(ctx: Context) -> tuple[MemoryService, Principal, str]:
    """The memory service, the caller's key and the space it acts for, from this call's request."""
    request = ctx.request_context.request
    if not isinstance(request, Request):
        raise ToolError("memproxy's MCP tools are served over HTTP only")
    caller: Principal = request.state.principal  # set by MCPEndpoint for this HTTP request
    user = caller.acting_user(memory_user_header(request.headers))
    if user is None:
        raise ToolError("no user: the MCP host must send the X-Memory-User header (memproxy mcp --user ...)")
    memories: MemoryService = request.app.state.memories
    return memories, caller, user_space(user)


@contextmanager
def _tool_errors() -> Iterator[None]:
    """memproxy's errors as tool errors a model can read (the one translation point; anything
    else is the SDK's "Error executing tool", its text never sent)."""
    try:
        yield
    except ProxyError as exc:
        raise ToolError(exc.client_message) from exc
    except MemoryOSError as exc:
        raise ToolError(from_memory_error(exc).message) from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ToolError(f"invalid arguments: {problems}") from exc


async def _own(memories: MemoryService, caller: Principal, space: str, memory_id: str) -> dict[str, Any]:
    """The memory, if it belongs to the acting user's space; another space's is "not found"."""
    memory = await memories.get(memory_id, caller)
    if memory.get("space") != space:
        raise ToolError(f"memory {memory_id[:128]!r} not found")
    return memory


def _brief(memory: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "content", "created_at", "tags", "pinned", "state")
    return {key: memory[key] for key in keys if key in memory}


def build_mcp_server() -> MCPServer:
    server: MCPServer = MCPServer(name="memproxy", instructions=INSTRUCTIONS)

    @server.tool()
    async def search_memories(query: str, ctx: Context, top_k: int = 8) -> list[dict[str, Any]]:
        """Find what is remembered about the user that bears on `query` (a question or topic in
        plain words, e.g. "where does the user live"), best match first. Use it before answering
        anything personal; each result has an id (for update_memory/delete_memory), its text and
        when it happened."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            request = SearchRequest(space=space, query=query, top_k=max(1, min(top_k, 50)))
            found = await memories.search(request, Headers(), caller)
            return [{"id": r.id, "text": r.text, "created_at": r.created_at.isoformat()} for r in found.results]

    @server.tool()
    async def add_memory(text: str, ctx: Context) -> list[dict[str, Any]]:
        """Remember one fact about the user for later conversations, stated on its own in the
        third person (e.g. "The user is allergic to peanuts."). A fact that repeats one already
        known is merged; one that contradicts it supersedes it. Returns what changed."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            added = await memories.add(AddMemoriesRequest(space=space, facts=[text], sync=True), Headers(), caller)
            return [{"id": change.id, "event": change.event, "text": change.text} for change in added.results]

    @server.tool()
    async def list_memories(ctx: Context, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        """List the user's memories, newest first, `limit` at a time; pass the returned
        `next_cursor` to get the next page. Prefer search_memories to find something specific."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            page = await memories.page(
                Headers(),
                caller,
                user=None,
                space=space,
                state=["active"],
                tag=None,
                since=None,
                until=None,
                text=None,
                oldest_first=False,
                cursor=cursor,
                limit=max(1, min(limit, 100)),
            )
            return {"memories": [_brief(m) for m in page.data], "next_cursor": page.next_cursor}

    @server.tool()
    async def update_memory(memory_id: str, text: str, ctx: Context) -> dict[str, Any]:
        """Correct a memory (an id from search_memories or list_memories) with its new full text,
        when the user says it is wrong or it changed. The old version stays in its history."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            await _own(memories, caller, space, memory_id)
            return _brief(await memories.edit(memory_id, {"content": text}, caller))

    @server.tool()
    async def delete_memory(memory_id: str, ctx: Context) -> str:
        """Forget a memory (an id from search_memories or list_memories), when the user asks to
        or it is plainly wrong and cannot be corrected."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            await _own(memories, caller, space, memory_id)
            await memories.delete(memory_id, caller, purge=False)
            return f"deleted {memory_id}"

    @server.tool()
    async def memory_history(memory_id: str, ctx: Context) -> list[dict[str, Any]]:
        """Every version of a memory, oldest first, with what changed it (added, updated, merged,
        superseded, deleted) and when: to explain where something the user was told came from."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            await _own(memories, caller, space, memory_id)
            records = await memories.history(memory_id, caller)
            return [{"event": r["event"], "at": r["at"], "memory": _brief(r["memory"])} for r in records]

    @server.resource("memory://{user}/stable", name="stable-memories", mime_type="text/plain")
    async def stable_memories(user: str, ctx: Context) -> str:
        """The user's long-term memories that memproxy puts in every prompt (pinned and often used
        ones): the same block a chat request gets, as text. Only the caller's own user is readable."""
        with _tool_errors():
            memories, caller, space = _caller(ctx)
            if user_space(user) != space:
                raise ResourceNotFoundError(f"no stable block for {user[:256]!r}")
            caller.authorize(space, write=False)
            stable = await memories.stable_block(space)
            return layout.render_block([item.text for item in stable], heading=layout.STABLE_HEADING)

    return server


class MCPEndpoint:
    """The SDK's streamable HTTP app behind memproxy's key check, on one path of the main app."""

    def __init__(self, server: MCPServer) -> None:
        # The app-wide Host/Origin policy is memproxy's; the SDK's own would refuse every Host
        # but localhost's.
        server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self._manager = server.session_manager
        self._app = StreamableHTTPASGIApp(self._manager)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self._manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        slots: MemorySlots = request.app.state.memory_slots
        async with AsyncExitStack() as held:
            try:
                caller = request.state.principal = await principal(request)  # the tools read it from the scope
                await held.enter_async_context(slots.hold(caller.key_id))  # memory work, like /v1/memories
            except ProxyError as exc:
                body = error_body(exc.client_message, type=exc.type, code=exc.code)
                response = JSONResponse(body, status_code=exc.status, headers=exc.headers)
                await response(scope, receive, send)
                return
            await self._app(scope, receive, send)


def route(endpoint: MCPEndpoint) -> Route:
    """POST only: stateless JSON answers need no server-sent stream (a GET would hold one open for
    nothing) nor session ends (DELETE); the spec's answer to both is this 405."""
    return Route(PATH, endpoint=endpoint, methods=["POST"], include_in_schema=False)
