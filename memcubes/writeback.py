"""Write-back: exchanges are journalled durably, then distilled into cubes off the request path.

    submit(exchange) ─▶ journal row (SQLite, committed) ─▶ bounded queue ─▶ worker:
        reader.distill → embed (batched) ─▶ under the space's lock: lifecycle.reconcile →
        store.apply (cubes, history, journal 'done' in one transaction) ─▶ index sync (outbox)

A crash at any point loses nothing: a journalled exchange that is not 'done' is picked up again by
the sweeper (at start-up and every ``retry_seconds``), and marking it done is part of the same
transaction as its cubes, so it is distilled exactly once. A full queue never drops work: the
exchange simply waits in the journal for the sweeper.

Several processes may serve one data dir. Each claims the exchanges it distils for
``lease_seconds`` (``Store.journal_claim``), so they do not all distil the same one; a killed
process's claims expire and the others' sweepers take them over. Reconciling with the space and
committing happen under ``SpaceLocks``, which holds across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from memcubes import quarantine
from memcubes.config import WritebackSettings
from memcubes.cube import CubeState, MemCube, Source, utcnow
from memcubes.embedder import Embedder
from memcubes.errors import (
    AlreadyApplied,
    EmbedderUnavailable,
    IndexUnavailable,
    MemoryOSError,
    StoreUnavailable,
)
from memcubes.exchange import Exchange, Turn
from memcubes.foreground import Foreground
from memcubes.heuristics import normalize
from memcubes.indexing import IndexSync
from memcubes.lifecycle import Decision, Lifecycle, Resolution, fact_slot
from memcubes.reader import Candidate, Reader
from memcubes.sentences import split_speaker
from memcubes.space_locks import SpaceLocks
from memcubes.spill import JournalSpill
from memcubes.store import ChangeSet, HistoryEvent, JournalEntry, Store
from memcubes.timewords import mentioned_windows
from memcubes.vector_store import VectorStore, embed_texts, text_entries

log = logging.getLogger(__name__)

_BATCH = 32
_SETTLE_SECONDS = 0.005
_CLAIM_POLL_SECONDS = 0.05
_EPISODE_COVERED = 0.8  # share of a message's words its facts must say for it to need no episode


@dataclass(frozen=True)
class MemoryChange:
    """What one candidate did to the space (the answer of a synchronous add)."""

    id: str
    event: str
    text: str
    sources: list[str]
    previous_id: str | None = None
    layer: str = "fact"  # or "episode": a message kept as said

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _new_cube(exchange: Exchange, resolution: Resolution, reader: str) -> MemCube:
    candidate = resolution.candidate
    now = utcnow()
    when = candidate.occurred_at or now
    held = resolution.decision is Decision.QUARANTINE
    return MemCube(
        space=exchange.space,
        state=CubeState.QUARANTINED if held else CubeState.ACTIVE,
        content=candidate.content,
        created_at=when,
        updated_at=now,
        valid_from=when,
        source=Source(
            exchange_id=exchange.id,
            message_ids=list(dict.fromkeys(turn.id for turn in candidate.turns)),
            roles=list(dict.fromkeys(turn.role for turn in candidate.turns)),
            names=list(dict.fromkeys(turn.name for turn in candidate.turns if turn.name)),
            model=exchange.model,
            reader=reader,
        ),
        tags=list(exchange.tags),
        meta=_layer_meta(candidate) | ({"quarantine": resolution.reason} if held else {}),
    )


def _layer_meta(candidate: Candidate) -> dict[str, Any]:
    """Episodes are marked as such; a fact carries its slot (the key its later versions share).
    Both record when what they tell happened, where the text says so ("yesterday", "in 2019"),
    resolved against when it was said: time-aware retrieval finds them by it."""
    meta: dict[str, Any] = {"layer": "episode" if candidate.episode else "fact"}
    if not candidate.episode and (slot := fact_slot(candidate.content)):
        meta["slot"] = slot
    if windows := mentioned_windows(candidate.content, candidate.occurred_at):
        meta["when"] = [window.as_json() for window in windows]
    return meta


def _layer(cube: MemCube) -> str:
    return "episode" if cube.is_episode else "fact"


def _link_episodes(resolutions: Sequence[Resolution], created: Mapping[int, MemCube]) -> None:
    """Point each new fact at the episodes of the messages it was distilled from (new ones, or
    those that already held the message's words)."""
    episode_of: dict[str, str] = {}
    for position, resolution in enumerate(resolutions):
        if not resolution.candidate.episode:
            continue
        cube = created.get(position) or resolution.target
        if cube is not None:
            for turn in resolution.candidate.turns:
                episode_of.setdefault(turn.id, cube.id)
    for position, cube in created.items():
        if resolutions[position].candidate.episode:
            continue
        linked = [episode_of[turn.id] for turn in resolutions[position].candidate.turns if turn.id in episode_of]
        if linked:
            cube.meta["episodes"] = list(dict.fromkeys(linked))


def retired_episodes(resolutions: Sequence[Resolution]) -> list[str]:
    """Episodes of the facts these resolutions supersede or delete: they stay as history, but
    retrieval ranks them below the current fact (``meta.stale``)."""
    return [
        episode_id
        for resolution in resolutions
        if resolution.decision in (Decision.UPDATE, Decision.DELETE) and resolution.target is not None
        for episode_id in resolution.target.meta.get("episodes", [])
    ]


def _beyond_facts(episodes: Sequence[Candidate], facts: Sequence[Candidate]) -> list[Candidate]:
    """The episodes worth keeping beside the facts: a message its facts say nearly all of (fillers
    aside: "Actually, I moved to Porto.") needs no second copy; the facts stand for it, and
    lifecycle rules act on them."""
    said: dict[str, set[str]] = {}
    for fact in facts:
        for turn in fact.turns:
            said.setdefault(turn.id, set()).update(normalize(split_speaker(fact.content)[1]).split())
    kept = []
    for episode in episodes:
        words = set(normalize(episode.turns[0].content).split())
        covered = len(words & said.get(episode.turns[0].id, set()))
        if not words or covered < _EPISODE_COVERED * len(words):
            kept.append(episode)
    return kept


def _not_distilled(candidates: Sequence[Candidate], unseen: set[str]) -> list[int]:
    """Positions of the candidates that still say something new: facts, and those drawn from at
    least one user or tool turn the space has not distilled (answers never make one stale)."""
    keep = []
    for position, candidate in enumerate(candidates):
        said = [turn for turn in candidate.turns if not turn.generated]
        if not said or any(turn.digest() in unseen for turn in said):
            keep.append(position)
    return keep


def _report(entry: JournalEntry) -> list[MemoryChange]:
    """What a finished exchange did, as recorded with it."""
    return [MemoryChange(**item) for item in (entry.result or {}).get("changes", [])]


def plan_changes(
    exchange: Exchange,
    resolutions: list[Resolution],
    *,
    reader: str,
    stale: Sequence[MemCube] = (),
) -> tuple[ChangeSet, list[MemoryChange], dict[str, int]]:
    """Turn decisions (one per candidate, in order) into one change set. Returns it, the report,
    and for each new cube its candidate's position (to reuse that candidate's vector for indexing).
    ``stale``: episodes whose facts this change retires (see ``retired_episodes``)."""
    changes = ChangeSet()
    report: list[MemoryChange] = []
    new_positions: dict[str, int] = {}
    created: dict[int, MemCube] = {}  # position → cube added by this change set
    now = utcnow()
    for position, resolution in enumerate(resolutions):
        target = resolution.target
        if resolution.replaces is not None:
            target = created.get(resolution.replaces)
        message_ids = [turn.id for turn in resolution.candidate.turns]
        if resolution.decision in (Decision.ADD, Decision.UPDATE, Decision.QUARANTINE):
            cube = _new_cube(exchange, resolution, reader)
            if resolution.decision is Decision.UPDATE and target is not None:
                cube.supersedes = target.id
                cube.version = target.version + 1
                old = target.model_copy(deep=True)
                old.state = CubeState.SUPERSEDED
                old.superseded_by = cube.id
                old.valid_to = cube.valid_from
                old.updated_at = now
                changes.cubes = [c for c in changes.cubes if c.id != old.id]
                changes.cubes.append(old)
                changes.events.append(HistoryEvent(old, "SUPERSEDE", resolution.reason, now))
            created[position] = cube
            changes.cubes.append(cube)
            changes.events.append(HistoryEvent(cube, resolution.decision.value, resolution.reason, now))
            if cube.is_live():
                new_positions[cube.id] = position
            report.append(
                MemoryChange(
                    cube.id,
                    resolution.decision.value,
                    cube.content,
                    cube.sources,
                    target.id if target else None,
                    _layer(cube),
                )
            )
        elif resolution.decision is Decision.DELETE and target is not None:
            gone = target.model_copy(deep=True)
            gone.state = CubeState.DELETED
            gone.updated_at = now
            changes.cubes.append(gone)
            changes.events.append(HistoryEvent(gone, "DELETE", resolution.reason, now))
            report.append(MemoryChange(gone.id, "DELETE", gone.content, gone.sources, layer=_layer(gone)))
        elif target is not None:
            fresh = [m for m in message_ids if m not in target.source.message_ids]
            if fresh:
                merged = target.model_copy(deep=True)
                merged.source.message_ids = [*target.source.message_ids, *fresh]
                changes.cubes.append(merged)
            report.append(MemoryChange(target.id, "NOOP", target.content, target.sources, layer=_layer(target)))
    _link_episodes(resolutions, created)
    for episode in stale:
        if episode.is_live() and not episode.meta.get("stale"):
            marked = episode.model_copy(deep=True)
            marked.meta["stale"] = True
            changes.cubes.append(marked)
    return changes, report, new_positions


class WriteBack:
    def __init__(
        self,
        *,
        store: Store,
        embedder: Embedder,
        vectors: VectorStore,
        lifecycle: Lifecycle,
        index_sync: IndexSync,
        readers: Mapping[str, Reader],
        episodes: Reader | None = None,
        settings: WritebackSettings,
        spill: JournalSpill,
        foreground: Foreground,
        locks: SpaceLocks,
        on_commit: Callable[[str, list[MemCube]], None] = lambda space, cubes: None,
    ) -> None:
        self._foreground = foreground
        self._spill = spill
        self._on_commit = on_commit
        self._store = store
        self._embedder = embedder
        self._vectors = vectors
        self._lifecycle = lifecycle
        self._index_sync = index_sync
        self._readers = dict(readers)
        self._episodes = episodes
        self._settings = settings
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.queue_size)
        self._queued: set[str] = set()
        self._claimed: set[str] = set()  # journalled (and claimed) here, not yet processed
        self._locks = locks
        self._tasks: list[asyncio.Task[None]] = []
        self.failures = 0  # failed attempts in this process, for metrics

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, *, workers: int = 1) -> None:
        self._tasks = [asyncio.create_task(self._work(), name=f"writeback-{i}") for i in range(workers)]
        self._tasks.append(asyncio.create_task(self._sweep(), name="writeback-sweeper"))

    async def stop(self, *, drain_seconds: float = 10.0) -> None:
        """Finish queued work for up to ``drain_seconds``; what is left stays in the journal."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait_idle(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._queued:  # claimed perhaps, and left: another process may take them at once
            with contextlib.suppress(StoreUnavailable):
                await asyncio.to_thread(self._store.journal_release, list(self._queued))

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def spilled(self) -> int:
        return len(self._spill)

    def forget(self, space: str, *, containing: Collection[str] | None = None) -> None:
        """Drop spilled exchanges of ``space`` (those holding one of ``containing``, when given)."""
        self._spill.forget(space, containing=containing)

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being processed (graceful shutdown)."""
        while self._queued:
            await asyncio.sleep(0.01)

    # -- submission ---------------------------------------------------------------------------

    async def submit(self, exchange: Exchange) -> bool:
        """Journal an exchange and queue it; False when that exchange id was already journalled.
        When the store cannot take it now, it waits in the spill and is journalled later."""
        payload = exchange.model_dump(mode="json")
        lease = self._settings.lease_seconds
        try:
            fresh = await asyncio.to_thread(self._store.journal_put, exchange.id, exchange.space, payload, lease=lease)
        except StoreUnavailable as exc:
            log.warning("journal unavailable, exchange %s waits in the spill: %s", exchange.id, exc)
            await asyncio.to_thread(self._spill.add, payload)
            return True
        if fresh:
            self._claimed.add(exchange.id)
            self._enqueue(exchange.id)
        return fresh

    async def run_now(self, exchange: Exchange) -> list[MemoryChange]:
        """Journal and process in the caller's task (``sync: true``); still exactly once."""
        fresh = await asyncio.to_thread(
            self._store.journal_put,
            exchange.id,
            exchange.space,
            exchange.model_dump(mode="json"),
            lease=self._settings.lease_seconds,
        )
        return await self.process(exchange.id, urgent=True, claimed=fresh)

    def _enqueue(self, exchange_id: str) -> None:
        if exchange_id in self._queued:
            return
        try:
            self._queue.put_nowait(exchange_id)
        except asyncio.QueueFull:
            return  # stays pending in the journal; the sweeper brings it back
        self._queued.add(exchange_id)

    # -- processing ---------------------------------------------------------------------------

    async def process(
        self, exchange_id: str, *, urgent: bool = False, drain: bool = True, claimed: bool = False
    ) -> list[MemoryChange]:
        """Distil one journalled exchange (exactly once). ``urgent`` when a caller waits for it;
        ``drain=False`` leaves the index writes to the caller (one drain for a batch);
        ``claimed`` when the caller claimed it already (else this does, or waits while another
        process holds it and a caller waits, or leaves it to that process).

        Reading and embedding happen outside the space's lock, so the exchanges of one busy space
        are distilled (an LLM call, in ``llm`` mode) and embedded together; only reconciling with
        what the space holds and committing are done one exchange at a time."""
        entry = await asyncio.to_thread(self._store.journal_get, exchange_id)
        if entry is None:
            raise MemoryOSError(f"exchange {exchange_id} is not in the journal")
        if entry.state == "done":
            return _report(entry)
        if not claimed and not await asyncio.to_thread(
            self._store.journal_claim, [exchange_id], lease=self._settings.lease_seconds
        ):
            return await self._finished_elsewhere(exchange_id, urgent=urgent)
        exchange = Exchange.model_validate(entry.payload)
        turns = await self._unseen(exchange, exchange.turns)
        reader = self._readers.get(exchange.mode) or self._readers["heuristic"]
        candidates = await reader.distill(turns)
        candidates += [Candidate(fact.strip(), (), exchange.created_at) for fact in exchange.facts if fact.strip()]
        if self._episodes is not None and reader.mode != "raw":
            candidates += _beyond_facts(await self._episodes.distill(turns), candidates)
        vectors, sentences = await embed_texts(self._embedder, [c.content for c in candidates], urgent=urgent)
        async with self._locks.hold(exchange.space):
            if exchange.skip_seen:  # an exchange committed meanwhile may have distilled some turns
                turns = await self._unseen(exchange, turns)
                keep = _not_distilled(candidates, {turn.digest() for turn in turns})
                candidates, vectors = [candidates[i] for i in keep], vectors[keep]
                sentences = [sentences[i] for i in keep]
            resolutions = quarantine.hold(
                await self._lifecycle.reconcile(exchange.space, candidates, vectors, mode=reader.mode)
            )
            retired = retired_episodes(resolutions)
            stale = list((await asyncio.to_thread(self._store.get_many, retired)).values()) if retired else []
            changes, report, positions = plan_changes(exchange, resolutions, reader=reader.mode, stale=stale)
            changes.seen = [(exchange.space, turn.digest()) for turn in turns] if exchange.skip_seen else []
            changes.journal_done = (exchange.id, {"changes": [change.to_dict() for change in report]})
            changes.vectors = self._vectors.encoded(
                [entry for i, p in positions.items() for entry in text_entries(i, vectors[p], sentences[p])]
            )
            try:
                await asyncio.to_thread(self._store.apply, changes)
            except AlreadyApplied:  # another worker (or process) finished it meanwhile: its report
                entry = await asyncio.to_thread(self._store.journal_get, exchange_id)
                return _report(entry) if entry else []
            if changes.cubes:
                self._on_commit(exchange.space, changes.cubes)
        if drain:
            await self._index_sync.drain(urgent=urgent)
        return report

    async def _finished_elsewhere(self, exchange_id: str, *, urgent: bool) -> list[MemoryChange]:
        """The report of an exchange another process claimed: when a caller waits (``urgent``),
        once that process is done (or its claim expired and this one took it over)."""
        while urgent:
            entry = await asyncio.to_thread(self._store.journal_get, exchange_id)
            if entry is None or entry.state == "done":
                return _report(entry) if entry else []
            if await asyncio.to_thread(self._store.journal_claim, [exchange_id], lease=self._settings.lease_seconds):
                return await self.process(exchange_id, urgent=True, claimed=True)
            await asyncio.sleep(_CLAIM_POLL_SECONDS)
        return []

    async def _unseen(self, exchange: Exchange, turns: Sequence[Turn]) -> list[Turn]:
        """The turns still to distil: with ``skip_seen``, those the space has not distilled
        before (answers the model generated are always read)."""
        if not exchange.skip_seen:
            return list(turns)
        unseen = await asyncio.to_thread(self._store.unseen, exchange.space, [turn.digest() for turn in turns])
        return [turn for turn in turns if turn.generated or turn.digest() in unseen]

    async def _work(self) -> None:
        """Take every exchange waiting (up to a batch), distil them concurrently (their embeddings
        share forward passes), then hand their index writes to the index sync at once."""
        while True:
            batch = [await self._queue.get()]
            defer = self._settings.defer_ms / 1000
            if defer and self._queue.qsize() < _BATCH:  # a backlog of a batch or more goes at once
                await self._foreground.quiet(settle=min(defer, _SETTLE_SECONDS), at_most=defer)
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                # Claimed when journalled here, or else now in one transaction; what another
                # process holds is its to finish.
                claimed = {exchange_id for exchange_id in batch if exchange_id in self._claimed}
                if others := [exchange_id for exchange_id in batch if exchange_id not in claimed]:
                    lease = self._settings.lease_seconds
                    claimed |= await asyncio.to_thread(self._store.journal_claim, others, lease=lease)
                await asyncio.gather(
                    *(self._process_logged(exchange_id) for exchange_id in batch if exchange_id in claimed)
                )
                await self._index_sync.drain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outbox keeps the index writes; the sweeper retries
                log.warning("vector index write failed (will retry): %s", exc)
            finally:
                for exchange_id in batch:
                    self._queued.discard(exchange_id)
                    self._claimed.discard(exchange_id)
                    self._queue.task_done()

    async def _process_logged(self, exchange_id: str) -> None:
        try:
            await self.process(exchange_id, drain=False, claimed=True)
        except (StoreUnavailable, IndexUnavailable, EmbedderUnavailable) as exc:
            # The infrastructure is down, not the exchange at fault: retried until it is back.
            self.failures += 1
            log.warning("write-back of %s waits for the store: %s", exchange_id, exc)
        except Exception as exc:
            self.failures += 1
            log.warning("write-back of %s failed (attempt counted, will retry): %s", exchange_id, exc)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.journal_failed, exchange_id, str(exc))

    async def _sweep(self) -> None:
        """Re-queue journalled work: after a restart, a full queue or a failed attempt."""
        while True:
            try:
                if len(self._spill):
                    for exchange_id in await asyncio.to_thread(self._spill.flush, self._store):
                        self._enqueue(exchange_id)
                await self._index_sync.drain()
                pending = await asyncio.to_thread(
                    self._store.journal_pending,
                    limit=self._settings.queue_size,
                    max_attempts=self._settings.max_attempts,
                )
                for entry in pending:
                    self._enqueue(entry.exchange_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("write-back sweep failed (store down?): %s", exc)
            await asyncio.sleep(self._settings.retry_seconds)
