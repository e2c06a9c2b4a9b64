"""``MemoryOS``: the memory layer as one object, usable as a library without HTTP.

It wires the parts (store, embedder, vector index, retriever, scheduler, lifecycle, write-back)
and exposes the operations the proxy and the CLI need. Blocking store calls run in worker
threads; nothing here touches the event loop for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from memcubes import bundle, importers, importing, languages
from memcubes.config import MemorySettings
from memcubes.cube import CubeState, MemCube, utcnow
from memcubes.embedder import Embedder, build_embedder
from memcubes.errors import BundleError, CubeNotFound, InvalidMemoryInput, SpaceNotFound
from memcubes.exchange import Exchange, Turn
from memcubes.foreground import Foreground
from memcubes.hot_vectors import HotVectors
from memcubes.ids import storable
from memcubes.indexing import IndexSync
from memcubes.keystore import KeyStore
from memcubes.lifecycle import Lifecycle, fact_slot
from memcubes.names import space_name
from memcubes.peers import PeerWatch
from memcubes.reader import LLMComplete, build_readers, episode_reader
from memcubes.response_store import ResponseStore
from memcubes.retrieval import Explanation, RetrievedItem, Retriever
from memcubes.scheduler import InjectionPlan, MemScheduler
from memcubes.space_locks import SpaceLocks
from memcubes.spill import JournalSpill
from memcubes.store import (
    CHANGE_INDEX,
    CHANGE_PERSON,
    Change,
    ChangeSet,
    CubeFilter,
    HistoryEvent,
    HistoryRecord,
    Purged,
    SpaceScope,
    SpaceStats,
    Store,
)
from memcubes.tokens import count_tokens
from memcubes.vector_migration import migrate_vectors
from memcubes.vector_store import VectorStore
from memcubes.vectors import VectorIndex, build_index
from memcubes.writeback import MemoryChange, WriteBack

log = logging.getLogger(__name__)

_MAINTENANCE_SECONDS = 1.0
_RECOVERY_SECONDS = 60.0  # imports a dead process left are looked for this often

SpaceFilter = Callable[[str], bool]
"""Which spaces a caller may see (by-id operations answer ``CubeNotFound`` for the others)."""
_EMBEDDER_META = "embedder"


def _check_embedder(store: Store, name: str) -> None:
    """Vectors from one embedder compared with another's query give poor matches (or none, if
    the dimensions differ): say so when the configured embedder is not the one that built the
    index. Memory keeps working; ``memproxy reindex`` re-embeds everything and records the new one."""
    built_with = store.get_meta(_EMBEDDER_META)
    if built_with is None:
        store.set_meta(_EMBEDDER_META, name)
    elif built_with != name:
        log.warning(
            "the vector index was built with %s but the embedder is %s: search quality suffers until "
            "`memproxy reindex` re-embeds the memories",
            built_with,
            name,
        )


class MemoryOS:
    def __init__(
        self,
        *,
        settings: MemorySettings,
        store: Store,
        embedder: Embedder,
        index: VectorIndex,
        llm: LLMComplete | None = None,
        owns_embedder: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = KeyStore(store)
        self.responses = ResponseStore(store, settings.responses)
        self.embedder = embedder
        self.index = index
        self._owns_embedder = owns_embedder
        self.vectors = VectorStore(store, dimension=embedder.dimension, precision=settings.vector_index.precision)
        self.hot = HotVectors(
            self.vectors,
            index,
            budget_bytes=settings.retrieval.hot_vectors_mb * 1024 * 1024,
            ann_min_entries=settings.vector_index.ann_min_entries,
        )
        self.retriever = Retriever(
            store=store, index=index, embedder=embedder, settings=settings.retrieval, hot=self.hot
        )
        self.scheduler = MemScheduler(
            retriever=self.retriever, store=store, settings=settings.scheduler, retrieval=settings.retrieval
        )
        self._foreground = Foreground()
        self._space_locks = SpaceLocks(store.stripe_locks(settings.data_dir / "locks"))
        self.index_sync = IndexSync(
            store=store,
            vectors=self.vectors,
            index=index,
            embedder=embedder,
            hot=self.hot,
            foreground=self._foreground,
            write_delay=settings.vector_index.write_delay_ms / 1000,
            write_idle=settings.vector_index.write_idle_ms / 1000,
            ann_min_entries=settings.vector_index.ann_min_entries,
        )
        self.lifecycle = Lifecycle(
            store=store, vectors=self.hot, dedupe_threshold=settings.extraction.dedupe_threshold, judge=llm
        )
        self.writeback = WriteBack(
            store=store,
            embedder=embedder,
            vectors=self.vectors,
            lifecycle=self.lifecycle,
            index_sync=self.index_sync,
            readers=build_readers(settings.extraction, llm),
            episodes=episode_reader(settings.extraction),
            settings=settings.writeback,
            spill=JournalSpill(settings.data_dir / "journal-spill.jsonl", limit=settings.writeback.spill_limit),
            on_commit=self._learned,
            foreground=self._foreground,
            locks=self._space_locks,
        )
        self._peers = PeerWatch(store, self._peer_changed)
        self._hits: dict[str, tuple[int, float]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @classmethod
    async def open(
        cls,
        settings: MemorySettings,
        *,
        embedder: Embedder | None = None,
        index: VectorIndex | None = None,
        llm: LLMComplete | None = None,
    ) -> MemoryOS:
        """Open (creating if needed) the data dir; load the embedder unless one is shared in."""
        data_dir = settings.data_dir
        store = await asyncio.to_thread(
            functools.partial(Store.open, data_dir / "memproxy.db", database_url=settings.database_url)
        )
        owns = embedder is None
        if embedder is None:
            embedder = await asyncio.to_thread(build_embedder, settings.embedder)
            await embedder.embed(["warm-up"])  # the first forward pass is several times slower
        if index is None:
            index = await asyncio.to_thread(build_index, settings.vector_index, data_dir)
        await asyncio.to_thread(_check_embedder, store, embedder.name)
        await asyncio.to_thread(languages.warm_up)  # the language identifier loads in 0.6 s
        await asyncio.to_thread(count_tokens, "warm-up")  # tiktoken's tables load on first use
        memory = cls(settings=settings, store=store, embedder=embedder, index=index, llm=llm, owns_embedder=owns)
        await migrate_vectors(
            store, memory.vectors, index, embedder=embedder, ann_min_entries=settings.vector_index.ann_min_entries
        )
        return memory

    async def start(self) -> None:
        """Start write-back workers; journalled work and index writes left by a crash resume."""
        self.store.checkpoint_in_background()
        await importing.recover(self.store, self.index_sync)
        await self._peers.catch_up()  # from here on, other processes' writes reach the caches
        await self.writeback.start()
        self._maintenance = asyncio.create_task(self._maintain_forever(), name="memory-maintenance")

    async def close(self) -> None:
        await self.writeback.stop()
        if self._maintenance is not None:
            # Not cancelled: a cancelled task would leave its checkpoint running in a worker thread
            # while close() closes that thread's connection (a segfault in the test suite).
            self._closing.set()
            await self._maintenance
        with contextlib.suppress(Exception):
            await self._flush_heat()
        await self.index_sync.close()
        await asyncio.to_thread(self._space_locks.close)  # on PostgreSQL: a server connection
        self.index.close()
        if self._owns_embedder:
            self.embedder.close()
        # waits for the store's worker threads; on PostgreSQL closes its pool (and runs a VACUUM due)
        await asyncio.to_thread(self.store.close)

    # -- reading ------------------------------------------------------------------------------

    async def plan(
        self,
        spaces: Sequence[str],
        messages: Sequence[dict[str, Any]],
        *,
        session: str | None = None,
        top_k: int | None = None,
        token_budget: int | None = None,
        freeze: bool = True,
    ) -> InjectionPlan:
        """What to inject; the stable block is the conversation's frozen one unless not ``freeze``."""
        await self._peers.catch_up()
        async with self._foreground.busy():
            return await self.scheduler.plan(
                spaces, messages, session=session, top_k=top_k, token_budget=token_budget, freeze=freeze
            )

    async def search(
        self, spaces: Sequence[str], query: str, *, top_k: int | None = None, token_budget: int | None = None
    ) -> InjectionPlan:
        """Exactly what the chat path would inject for a user message equal to ``query``."""
        return await self.plan(
            spaces, [{"role": "user", "content": query}], top_k=top_k, token_budget=token_budget, freeze=False
        )

    async def explain(
        self, spaces: Sequence[str], query: str, *, top_k: int | None = None, token_budget: int | None = None
    ) -> list[Explanation]:
        """The retriever's ranked candidates for ``query`` with their dense, lexical and fused
        scores (for the inspector's search playground; a search of its own, so no request's
        plan pays for it)."""
        await self._peers.catch_up()
        async with self._foreground.busy():
            result = await self.retriever.search(spaces, query, top_k=top_k, token_budget=token_budget, explain=True)
        return result.explained

    async def stable_block(self, space: str) -> list[RetrievedItem]:
        """The space's stable block as the next request gets it: within its share of the budget."""
        await self._peers.catch_up()
        return await self.scheduler.current_stable_block(space)

    def record_hits(self, ranked_ids: Sequence[str]) -> None:
        """Credit heat to cubes retrieved as relevant, weighted by rank (1, 1/2, 1/3 ...) so that
        in a small space, where everything is retrieved, only what ranks high gets hot. Flushed
        to the store in the background, in batches."""
        for rank, cube_id in enumerate(ranked_ids):
            count, weight = self._hits.get(cube_id, (0, 0.0))
            self._hits[cube_id] = (count + 1, weight + 1.0 / (rank + 1))

    async def _flush_heat(self) -> None:
        """Write heat, then let the scheduler promote and demote in the spaces that got hits."""
        if self._hits:
            hits, self._hits = self._hits, {}
            half_life = self.settings.scheduler.heat_half_life_hours * 3600
            spaces = await asyncio.to_thread(self.store.touch, dict(hits), half_life=half_life)
            for space in spaces:
                await self.scheduler.rebalance(space)

    def _learned(self, space: str, cubes: Sequence[MemCube]) -> None:
        """Write-back committed what it distilled: new conversations see it; running ones keep
        their stable block unless a memory in it stopped being true (a person's change is
        ``_changed``)."""
        self._changed(space, cubes, by_person=False)

    def _changed(self, space: str, cubes: Sequence[MemCube] | None = None, *, by_person: bool = True) -> None:
        """A write to ``space`` committed (of ``cubes``, when known): if it may have changed the
        stable block, re-read it and let listeners rebuild what depends on it (in the
        background: callers are write paths). A person's change (``by_person``) also reaches the
        conversations under way at once."""
        self.scheduler.invalidate_frozen(space, cubes, by_person=by_person)
        if cubes is not None and not by_person:  # write-back's commits: the cubes as committed
            self.retriever.invalidate(space, (), committed=cubes)
        else:  # a person's change may pass a cube as it was before (a purge): read again
            self.retriever.invalidate(space, None if cubes is None else [cube.id for cube in cubes])
        if self.scheduler.invalidate(space, cubes):
            self._announce(space)

    def _announce(self, space: str) -> None:
        """Let the stable block's listeners rebuild what depends on it, in the background."""
        task = asyncio.get_running_loop().create_task(self.scheduler.announce(space))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_vectors(self, space: str, cube_ids: Sequence[str]) -> None:
        try:
            await self.hot.refresh(space, cube_ids)
        except Exception as exc:  # the space is read again as a whole instead
            log.warning("could not read the vectors another process wrote in %s: %s", space, exc)
            self.hot.drop(space)

    async def _peer_changed(self, change: Change) -> None:
        """Another process committed ``change``: what this one holds of the space is read again.
        The vectors of the cubes it wrote (committed with them, or embedded later by its index
        sync: ``CHANGE_INDEX``) are read again from the store before the request that noticed
        them searches, or the whole space's when it changed the space as a whole; its cube
        writes drop the cubes, speakers and stable block held; a person's change (an edit, a
        delete) also reaches conversations under way and the activation caches."""
        space = change.space
        if change.cubes is None:
            self.hot.drop(space)
        else:
            await self._refresh_vectors(space, change.cubes)
        if change.kind == CHANGE_INDEX:
            return
        person = change.kind == CHANGE_PERSON
        self.scheduler.invalidate_frozen(space, None, by_person=person)
        self.retriever.invalidate(space, change.cubes)
        self.scheduler.invalidate(space)
        if person:
            self._announce(space)

    async def _maintain_forever(self) -> None:
        """Every second: record heat, and checkpoint the store's WAL off the write path; every
        minute, roll back imports another process left half written. Returns once ``close()``
        asks, after the step under way."""
        loop = asyncio.get_running_loop()
        next_recovery = loop.time() + _RECOVERY_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), _MAINTENANCE_SECONDS)
            if self._closing.is_set():
                return
            if loop.time() >= next_recovery:
                next_recovery = loop.time() + _RECOVERY_SECONDS
                try:
                    await importing.recover(self.store, self.index_sync)
                except Exception as exc:
                    log.warning("could not roll back abandoned imports: %s", exc)
            try:
                await self._flush_heat()
            except Exception as exc:
                log.warning("could not record memory heat: %s", exc)
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except Exception as exc:
                log.warning("could not checkpoint the store: %s", exc)

    # -- writing ------------------------------------------------------------------------------

    async def journal_counts(self) -> dict[str, int]:
        """Exchanges per journal state (pending, done, failed), those queued or spilled in this
        process, and index writes not applied yet (``indexing``: the vector index is behind)."""
        counts = await asyncio.to_thread(self.store.journal_counts)
        counts["indexing"] = await asyncio.to_thread(self.store.outbox_count)
        counts["queued"] = self.writeback.queued
        counts["spilled"] = self.writeback.spilled
        return counts

    async def oldest_pending_age(self) -> float | None:
        """Seconds the oldest unfinished exchange has waited (write-back lag); ``None``: none waits."""
        oldest = await asyncio.to_thread(self.store.journal_oldest_pending)
        return None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())

    async def record(self, exchange: Exchange) -> bool:
        """Journal an exchange for background distillation (the chat path)."""
        return await self.writeback.submit(exchange)

    async def add(self, exchange: Exchange, *, sync: bool) -> list[MemoryChange] | None:
        """Add memories from explicit messages; with ``sync`` wait until they are searchable."""
        if not exchange.turns and not exchange.facts:
            raise InvalidMemoryInput("nothing to add: no messages or facts")
        if sync:
            return await self.writeback.run_now(exchange)
        await self.writeback.submit(exchange)
        return None

    # -- management ---------------------------------------------------------------------------

    async def get(self, cube_id: str, *, visible: SpaceFilter | None = None) -> MemCube:
        """The cube, if it exists in a space ``visible`` accepts; else ``CubeNotFound``, the same
        answer either way, so a caller cannot learn which ids exist in spaces it may not see."""
        cube = await asyncio.to_thread(self.store.get, cube_id) if storable(cube_id) else None
        if cube is None or (visible is not None and not visible(cube.space)):
            raise CubeNotFound(f"no memory with id {cube_id}")
        return cube

    async def source_messages(self, cube_id: str, *, visible: SpaceFilter | None = None) -> list[Turn]:
        """The messages a memory was distilled from, as journalled with its exchange (a message
        whose exchange was not journalled, e.g. an imported memory's, is not found)."""
        cube = await self.get(cube_id, visible=visible)
        if cube.source.exchange_id is None:
            return []
        entry = await asyncio.to_thread(self.store.journal_get, cube.source.exchange_id)
        if entry is None or entry.space != cube.space:
            return []
        wanted = set(cube.sources)
        return [turn for turn in Exchange.model_validate(entry.payload).turns if turn.id in wanted]

    async def list_memories(self, query: CubeFilter) -> list[MemCube]:
        return await asyncio.to_thread(self.store.list_cubes, query)

    async def space_page(
        self, *, contains: str | None, after: str | None, limit: int, scope: SpaceScope | None = None
    ) -> list[SpaceStats]:
        """Spaces in name order with their counts, last activity and size; ``scope`` restricts
        the page to spaces a caller may see."""

        def read() -> list[SpaceStats]:
            names = self.store.space_page(contains=contains, after=after, limit=limit, scope=scope)
            return [stats for name in names if (stats := self.store.space_stats(name)) is not None]

        return await asyncio.to_thread(read)

    async def space_stats(self, space: str) -> SpaceStats:
        stats = await asyncio.to_thread(self.store.space_stats, space)
        if stats is None:
            raise SpaceNotFound(f"no space {space!r}")
        return stats

    async def history(self, cube_id: str, *, visible: SpaceFilter | None = None) -> list[HistoryRecord]:
        await self.get(cube_id, visible=visible)
        return await asyncio.to_thread(self.store.history, cube_id)

    async def delete(self, cube_id: str, *, visible: SpaceFilter | None = None) -> MemCube:
        """Soft delete: the state only, history kept for audit. Returns the cube as it was."""
        cube = await self.get(cube_id, visible=visible)
        if cube.state is not CubeState.DELETED:
            deleted = cube.model_copy(deep=True)
            deleted.state = CubeState.DELETED
            deleted.updated_at = utcnow()
            await asyncio.to_thread(
                self.store.apply, ChangeSet(cubes=[deleted], events=[HistoryEvent(deleted, "DELETE", "api")])
            )
            self._changed(cube.space, [deleted])
            await self.index_sync.drain(urgent=True)
        return cube

    async def purge(self, cube_id: str, *, visible: SpaceFilter | None = None, by_source: bool = False) -> Purged:
        """Gone from every file of the data dir: SQLite (rows, history, journal), the spill file
        and the vector index; ``by_source``: with every memory of its space that shares one of its
        source messages (see ``Store.purge``)."""
        cube = await self.get(cube_id, visible=visible)
        purged = await asyncio.to_thread(self.store.purge, cube.id, by_source=by_source)
        await asyncio.to_thread(self.writeback.forget, cube.space, containing=purged.words)
        if await asyncio.to_thread(self.responses.forget_space, cube.space, containing=purged.words):
            await asyncio.to_thread(self.store.truncate_wal)  # the stored responses holding its words
        # Memories found by source are not at hand: the whole space counts as changed then.
        self._changed(cube.space, [cube] if purged.ids == [cube.id] else None)
        await self.index_sync.drain(urgent=True)
        return purged

    async def edit(self, cube_id: str, changes: dict[str, Any], *, visible: SpaceFilter | None = None) -> MemCube:
        """An edit is a new version of the same cube; the previous one stays in its history."""
        cube = await self.get(cube_id, visible=visible)
        if cube.state is not CubeState.ACTIVE:
            raise InvalidMemoryInput(f"memory {cube_id} is {cube.state.value}; only active memories can be edited")
        updated = cube.model_copy(update=changes, deep=True)
        updated = MemCube.model_validate(updated.model_dump())
        updated.version = cube.version + 1
        updated.updated_at = utcnow()
        if "content" in changes:
            slot = fact_slot(updated.content)
            updated.meta = (
                {**updated.meta, "slot": slot} if slot else {k: v for k, v in updated.meta.items() if k != "slot"}
            )
        await asyncio.to_thread(
            self.store.apply, ChangeSet(cubes=[updated], events=[HistoryEvent(updated, "UPDATE", "edit")])
        )
        if updated.pinned != cube.pinned:  # a pin joins (or leaves) the end of the stable block
            await asyncio.to_thread(self.store.set_stable, {cube.id: utcnow() if updated.pinned else None})
        self._changed(updated.space, [updated])
        await self.index_sync.drain(urgent=True)
        return updated

    async def approve(self, cube_id: str, *, visible: SpaceFilter | None = None) -> MemCube:
        """Release a quarantined memory: from now on it is retrieved and may be promoted."""
        cube = await self.get(cube_id, visible=visible)
        if cube.state is not CubeState.QUARANTINED:
            raise InvalidMemoryInput(f"memory {cube_id} is {cube.state.value}, not quarantined")
        approved = cube.model_copy(deep=True)
        approved.state = CubeState.ACTIVE
        approved.version = cube.version + 1
        approved.updated_at = utcnow()
        approved.meta = {key: value for key, value in cube.meta.items() if key != "quarantine"}
        if slot := fact_slot(approved.content):
            approved.meta["slot"] = slot
        await asyncio.to_thread(
            self.store.apply, ChangeSet(cubes=[approved], events=[HistoryEvent(approved, "APPROVE", "api")])
        )
        self._changed(approved.space, [approved])
        await self.index_sync.drain(urgent=True)
        return approved

    async def reindex(self, space: str | None = None, *, progress: Callable[[int], None] | None = None) -> int:
        """Rebuild the vector index from the store (all spaces, or one); ``progress`` hears each
        batch's count of cubes indexed."""
        count = await self.index_sync.reindex(space, progress=progress)
        for name in [space] if space else await asyncio.to_thread(self.store.spaces):
            self.hot.drop(name)
        if space is None:
            await asyncio.to_thread(self.store.set_meta, _EMBEDDER_META, self.embedder.name)
        return count

    async def delete_space(self, space: str) -> int:
        """Forget everything of one space, in SQLite (stored responses included) and in the
        vector index; nothing else."""
        await asyncio.to_thread(self.responses.forget_space, space)  # the store then truncates the WAL
        count = await asyncio.to_thread(self.store.delete_space, space)
        await asyncio.to_thread(self.writeback.forget, space)
        self._changed(space)
        await self.index_sync.drain(urgent=True)
        return count

    # -- portable bundles ---------------------------------------------------------------------

    async def export_space(self, space: str, target: IO[bytes]) -> bundle.Manifest:
        """Write ``space`` (every state, its history, its vectors) to ``target`` as a bundle zip."""
        return await bundle.export_space(
            store=self.store, vectors=self.vectors, embedder=self.embedder, space=space, target=target
        )

    async def import_bundle(
        self,
        data: bytes,
        *,
        space: str | None = None,
        on_conflict: bundle.OnConflict = "skip",
        format: importers.ImportFormat = "auto",
        check_target: Callable[[str], None] | None = None,
        max_bytes: int = bundle.MAX_BUNDLE_BYTES,
        progress: importing.Progress | None = None,
    ) -> bundle.ImportReport:
        """Import a memcube bundle, mem0 export or MemOS dump, all or nothing: ``prepare_import``
        then ``run_import``."""
        plan = await self.prepare_import(
            data, space=space, on_conflict=on_conflict, format=format, check_target=check_target, max_bytes=max_bytes
        )
        return await self.run_import(plan, progress=progress)

    async def prepare_import(
        self,
        data: bytes,
        *,
        space: str | None = None,
        on_conflict: bundle.OnConflict = "skip",
        format: importers.ImportFormat = "auto",
        check_target: Callable[[str], None] | None = None,
        max_bytes: int = bundle.MAX_BUNDLE_BYTES,
    ) -> bundle.ImportPlan:
        """Parse, validate and plan an import; writes nothing, so a bad upload changes nothing.
        The target space (``space``, else the bundle's own) must be a name every route accepts
        (``memcubes.names``); ``check_target`` may refuse it by raising. A zip's members may
        inflate to ``max_bytes`` in all."""
        contents = await asyncio.to_thread(importers.load, data, format=format, space=space, max_bytes=max_bytes)
        try:
            space = space_name(space or contents.space)
        except ValueError as exc:
            raise BundleError(f"the target space {(space or contents.space)[:80]!r} {exc}") from None
        if check_target is not None:
            check_target(space)
        return await bundle.plan_against(
            store=self.store, embedder=self.embedder, contents=contents, space=space, on_conflict=on_conflict
        )

    async def run_import(
        self, plan: bundle.ImportPlan, *, progress: importing.Progress | None = None
    ) -> bundle.ImportReport:
        """Write a prepared import (``memcubes.importing``): every memory of it, or, when
        anything fails on the way, none. ``progress`` hears (written, total) after each chunk."""
        await importing.write_import(
            plan,
            store=self.store,
            index_sync=self.index_sync,
            vectors=self.vectors,
            embedder=self.embedder,
            progress=progress,
        )
        self._changed(plan.report.space)
        return plan.report


def parse_time(value: str | datetime | None) -> datetime | None:
    """ISO 8601 in, aware UTC datetime out (naive times are taken as UTC)."""
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidMemoryInput(f"not an ISO 8601 time: {value!r}") from exc
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
