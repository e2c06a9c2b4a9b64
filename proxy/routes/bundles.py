"""Portable bundles: export a space as a ``memcube-bundle`` zip, import one (or a mem0 export or a
MemOS dump). The format and its validation live in ``memcubes.bundle`` and ``memcubes.importers``."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from memcubes.bundle import OnConflict
from memcubes.errors import MemoryOSError
from memcubes.importers import ImportFormat
from memcubes.importing import Progress
from memcubes.memory_os import MemoryOS
from proxy.auth import CurrentPrincipal, principal
from proxy.errors import InvalidRequest, error_body, from_memory_error
from proxy.memory_slots import memory_work
from proxy.protocol import ErrorResponse
from proxy.routes.memories import Service
from proxy.serving.memories import space_param

IMPORT_PATH = "/v1/spaces/import"
PROGRESS_TYPE = "application/x-ndjson"

router = APIRouter(dependencies=[Depends(principal), Depends(memory_work)], tags=["bundles"])
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 503)}
_SPOOL_BYTES = 16 * 1024 * 1024  # bundles up to this size stay in memory, larger ones go to disk
_CHUNK = 256 * 1024
_INFLATED_SHARE = 2  # an upload's zip members may inflate to twice max_import_size_mb in all
log = logging.getLogger(__name__)


def bundle_filename(space: str) -> str:
    """``user:alice`` → ``user_alice.memcube``: safe in a Content-Disposition header and on disk."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", space).strip("._") or "space") + ".memcube"


async def _chunks(spool: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(spool.read, _CHUNK):
            yield chunk
    finally:
        spool.close()


async def _uploaded(request: Request) -> bytes:
    """The file's bytes: the body itself, or a multipart form's one file field. The body was
    already bounded by ``max_import_size_mb``."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await request.body()
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # python-multipart's and Starlette's parse errors alike
        raise InvalidRequest(f"unreadable multipart form: {type(exc).__name__}") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    if len(files) != 1:
        await form.close()
        raise InvalidRequest("send one file in the form (curl -F file=@alice.memcube)", param="file")
    try:
        return await files[0].read()
    finally:
        await form.close()


@router.get("/v1/spaces/{space:path}/export", responses=_ERRORS, response_class=StreamingResponse)
async def export_space(space: str, memories: Service, caller: CurrentPrincipal) -> StreamingResponse:
    """The space as a bundle zip: every memory in every state, its history and its vectors."""
    space = space_param(space) or ""
    caller.authorize(space, write=False)
    memory: MemoryOS = memories.memory
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - closed by _chunks
    try:
        await memory.export_space(space, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    headers = {
        "content-disposition": f'attachment; filename="{bundle_filename(space)}"',
        "content-length": str(size),
    }
    return StreamingResponse(_chunks(spool), media_type="application/zip", headers=headers)


@router.post(IMPORT_PATH, responses=_ERRORS, response_model=None)
async def import_bundle(
    request: Request,
    memories: Service,
    caller: CurrentPrincipal,
    space: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
    on_conflict: OnConflict = "skip",
    format: Annotated[ImportFormat, Query()] = "auto",
) -> dict[str, Any] | StreamingResponse:
    """The body is the file itself (a memcube bundle, a mem0 ``get_all`` JSON, or a MemOS dump,
    its directory zipped), or a multipart form with the file as its one file field
    (``curl -F file=@alice.memcube``). All or nothing: nothing is written unless all of it is
    valid, nothing is left of an import that fails half way, and nothing at all is written into
    a space the key may not write (``space``, else the one the bundle names). With ``Accept:
    application/x-ndjson`` the answer is a stream of progress lines, then the reply (or an error)."""
    caller.require_memory_api(write=True)
    data = await _uploaded(request)
    if not data:
        raise InvalidRequest("the request body is empty: send the bundle (or export) file as the body")
    target = space_param(space)

    def check(name: str) -> None:
        caller.authorize(name, write=True)

    limit = request.app.state.settings.general_settings.max_import_size_mb * 1024 * 1024
    memory: MemoryOS = memories.memory
    plan = await memory.prepare_import(
        data,
        space=target,
        on_conflict=on_conflict,
        format=format,
        check_target=check,
        max_bytes=int(limit * _INFLATED_SHARE),
    )
    del data  # an upload of hundreds of MB is not kept while the import runs

    async def run(progress: Progress | None = None) -> dict[str, Any]:
        report = await memory.run_import(plan, progress=progress)
        await memories.audit(
            caller,
            "space.import",
            target=report.space,
            format=report.format,
            imported=report.imported,
            overwritten=report.overwritten,
            skipped=report.skipped,
        )
        return {"object": "import", **report.to_dict()}

    if PROGRESS_TYPE in request.headers.get("accept", ""):
        return StreamingResponse(_progress_lines(run), media_type=PROGRESS_TYPE)
    return await run()


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode() + b"\n"


async def _progress_lines(run: Callable[[Progress], Awaitable[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """``{"object": "import.progress", "done", "total"}`` after each chunk written, then the
    reply, or ``{"error": ...}`` (the status, 200, was sent with the first line). A client that
    goes away cancels the import, which rolls back."""
    lines: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
    task = asyncio.ensure_future(run(lambda done, total: lines.put_nowait((done, total))))
    task.add_done_callback(lambda _: lines.put_nowait(None))
    try:
        while (step := await lines.get()) is not None:
            yield _line({"object": "import.progress", "done": step[0], "total": step[1]})
        try:
            yield _line(task.result())
        except MemoryOSError as exc:
            yield _line(from_memory_error(exc).body())
        except Exception:
            log.exception("import failed")
            yield _line(error_body("internal error in memproxy", type="server_error"))
    finally:
        task.cancel()
