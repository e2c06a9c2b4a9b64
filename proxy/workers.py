"""``memproxy serve --workers N``: N processes serving one port, so Python work uses N cores.

The parent binds the listening socket (a port in use fails once, at once) and starts N worker
processes, spawned (a fresh interpreter each: nothing of the parent's state is copied by fork),
each building the app and serving the inherited socket. The kernel hands each new connection to
whichever worker accepts it first, so a busy worker takes fewer: uvicorn's own multi-worker mode
works the same way, but wants the app as an import string where memproxy builds it from
settings. A worker that dies is started again; one that exits with an error within
``_START_SECONDS`` of starting (a bad config, a data dir it may not use) stops them all, with its
exit status (a signal, e.g. the OOM killer's, is not that). SIGINT and
SIGTERM stop the workers gracefully (uvicorn's shutdown: requests under way finish).

What makes several processes safe on one data dir is in ``memcubes``: SQLite in WAL mode, journal
claims with leases (``memcubes.writeback``), one writer per space (``memcubes.space_locks``) and
caches that notice the others' writes (``memcubes.peers``).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from proxy import heap
from proxy.config import Settings
from proxy.datadir_lock import DataDirBusy, DataDirLock

log = logging.getLogger(__name__)

_START_SECONDS = 20.0
_STOP_SECONDS = 20.0


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` that child processes can inherit."""
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_socket(settings: Settings, sock: socket.socket | None = None) -> None:
    """Run one server process (``sock``: the listening socket it shares, else its own)."""
    from proxy.app import build_app
    from proxy.logs import configure_logging
    from proxy.server import uvicorn_options

    configure_logging(settings.server)
    config = uvicorn.Config(
        build_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        log_config=None,  # uvicorn's loggers propagate to memproxy's handler: one format
        loop="uvloop",
        timeout_graceful_shutdown=15,
        access_log=False,  # memproxy writes its own access line (with request id, model, memory status)
        **uvicorn_options(settings.server),
    )
    _SettledServer(config).run(sockets=None if sock is None else [sock])


class _SettledServer(uvicorn.Server):
    """uvicorn's server, settling the heap once the app has started (see ``proxy.heap``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        heap.settle()


def _worker(settings: Settings, sock: socket.socket) -> None:
    lock = DataDirLock(settings.memory.data_dir, command="serve")
    try:
        lock.acquire()
    except DataDirBusy as exc:
        print(f"memproxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        serve_socket(settings, sock)
    finally:
        lock.release()


def run_workers(settings: Settings) -> int:
    """Serve ``settings.server.workers`` processes until SIGINT or SIGTERM; the exit status."""
    sock = listening_socket(settings.server.host, settings.server.port)
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    def start(number: int) -> tuple[BaseProcess, float]:
        process = context.Process(target=_worker, args=(settings, sock), name=f"memproxy-worker-{number}")
        process.start()
        return process, time.monotonic()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    workers = [start(number) for number in range(settings.server.workers)]
    status = 0
    try:
        while not stopping and not status:
            time.sleep(0.2)
            for number, (process, started) in enumerate(workers):
                if process.is_alive() or stopping:
                    continue
                code = process.exitcode or 0
                if code > 0 and time.monotonic() - started < _START_SECONDS:  # not killed: it failed to start
                    log.error("worker %d exited with status %s while starting: stopping", number, code)
                    status = code
                    break
                log.warning(
                    "worker %d (pid %s) exited with status %s: starting another", number, process.pid, process.exitcode
                )
                workers[number] = start(number)
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + _STOP_SECONDS
        for process, _ in workers:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
        sock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
