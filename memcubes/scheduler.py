"""The MemScheduler: decides, per request, which memories enter the prompt and where.

Memory is scheduled like an OS resource (MemOS's idea), in three tiers:

- the **stable block**: pinned memories and the space's hottest ones, in the order they joined,
  placed right after the application's system messages. Membership moves with *heat* (relevance
  hits, decayed with a half-life) and hysteresis: a memory joins at ``promote_heat`` and leaves
  below ``demote_heat``. Rebalancing runs in the background (after heat is flushed and after
  write-back), never on the request path, and listeners (local backends) are told when a block
  changed so they can rebuild its activation cache ahead of the next request. A conversation sees
  the block frozen as it was at its first request (``memcubes.conversations``) unless a person
  changed a memory in it, so the prompt up to its end is byte-identical from turn to turn and
  provider prefix caches and the local activation (KV) cache hit for the whole history.
- the **volatile block**: retrieved for this query, minus what the stable block holds.
- **working memory** per session: what was injected in recent turns stays (its score decaying
  each turn) unless displaced by something more relevant, so a conversation keeps its context
  when a follow-up question is vague.

One token budget covers both blocks; the stable block may use at most ``stable_share`` of it,
unless ``stable_token_budget`` and ``volatile_token_budget`` give each block its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memcubes.config import RetrievalSettings, SchedulerSettings
from memcubes.conversations import FrozenStableBlocks, conversation_id
from memcubes.cube import MemCube, utcnow
from memcubes.layout import message_text
from memcubes.relevance import NOTHING_RELEVANT, PROFILE_QUERY, asks_advice, is_personal, skip_reason
from memcubes.retrieval import MAX_QUERY_CHARS, RetrievedItem, Retriever, fit, item_of, pack, said_already
from memcubes.store import Store, decayed

_SHORT_QUERY_WORDS = 6
_STABLE_TTL = 5.0
_STABLE_SPACES = 10_000

StableListener = Callable[[str, list[RetrievedItem]], None]
"""Called with a space and its new stable block whenever the block's members change."""


@dataclass(frozen=True)
class InjectionPlan:
    stable: list[RetrievedItem] = field(default_factory=list)
    volatile: list[RetrievedItem] = field(default_factory=list)
    relevant: list[str] = field(default_factory=list)  # ids retrieved as relevant (heat credit)
    degraded: bool = False  # part of the memory layer failed; what could be found is here
    considered: int = 0  # memories retrieved for this turn before the budget and relevance cut
    reason: str | None = None  # why no volatile block: see ``memcubes.relevance``

    @property
    def items(self) -> list[RetrievedItem]:
        return [*self.stable, *self.volatile]

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def volatile_tokens(self) -> int:
        """The part of the prompt's memory that no prefix cache can hold: it changes every turn."""
        return sum(item.tokens for item in self.volatile)

    @property
    def cube_ids(self) -> list[str]:
        return [cube_id for item in self.items for cube_id in item.cube_ids]


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """What the user said last (memory blocks removed), at most ``MAX_QUERY_CHARS`` of it: every
    rule that reads it (relevance, time words) stays bounded whatever a client sends."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message).strip()[:MAX_QUERY_CHARS]
    return ""


def query_from(messages: Sequence[dict[str, Any]]) -> str:
    """The retrieval query: the last user turn, with the previous user turn when it is too short
    to stand alone ("and her sister?")."""
    user_texts = [message_text(m).strip()[:MAX_QUERY_CHARS] for m in messages if m.get("role") == "user"]
    user_texts = [text for text in user_texts if text]
    if not user_texts:
        return ""
    query = user_texts[-1]
    if len(query.split()) < _SHORT_QUERY_WORDS and len(user_texts) > 1:
        query = f"{user_texts[-2]}\n{query}"
    return query


@dataclass
class _Remembered:
    item: RetrievedItem
    score: float
    turns_left: int


class MemScheduler:
    def __init__(
        self, *, retriever: Retriever, store: Store, settings: SchedulerSettings, retrieval: RetrievalSettings
    ) -> None:
        self._retriever = retriever
        self._store = store
        self.settings = settings
        self._retrieval = retrieval
        self._half_life = settings.heat_half_life_hours * 3600
        # Stable members per space, kept until a write to the space invalidates them (and at most
        # _STABLE_TTL seconds, in case another process wrote to the same store).
        self._stable: OrderedDict[str, tuple[float, list[MemCube]]] = OrderedDict()
        self._working: OrderedDict[tuple[tuple[str, ...], str], dict[str, _Remembered]] = OrderedDict()
        self._listeners: list[StableListener] = []
        self.frozen = FrozenStableBlocks(idle_seconds=settings.stable_refresh_minutes * 60, limit=settings.sessions)

    # -- the stable block ---------------------------------------------------------------------

    def on_stable_change(self, listener: StableListener) -> None:
        self._listeners.append(listener)

    def invalidate(self, space: str, changed: Sequence[MemCube] | None = None) -> bool:
        """Cubes of ``space`` changed (``None``: unknown which): drop its stable block unless the
        change cannot touch it, i.e. no changed cube is pinned or a member. Returns whether it
        was dropped. Most writes (a write-back adding what a user just said) leave it alone, so
        requests keep reading it from here rather than from SQLite."""
        cached = self._stable.get(space)
        if cached is not None and changed is not None:
            members = {cube.id for cube in cached[1]}
            if not any(cube.pinned or cube.id in members for cube in changed):
                return False
        self._stable.pop(space, None)
        return True

    async def _members(self, space: str) -> list[MemCube]:
        cached = self._stable.get(space)
        if cached is not None and time.monotonic() - cached[0] < _STABLE_TTL:
            self._stable.move_to_end(space)
            return cached[1]
        cubes = await asyncio.to_thread(self._store.stable_members, space)
        self._stable[space] = (time.monotonic(), cubes)
        while len(self._stable) > _STABLE_SPACES:
            self._stable.popitem(last=False)
        return cubes

    async def stable_block(
        self, spaces: Sequence[str], *, token_budget: int, conversation: str | None = None
    ) -> list[RetrievedItem]:
        """Pinned first, then promoted members, each in joining order, within the token budget;
        for a ``conversation``, the members it was first shown (see ``memcubes.conversations``)."""
        key = None if conversation is None else (tuple(spaces), conversation)
        cubes = None if key is None else self.frozen.get(key)
        if cubes is None:
            epoch = self.frozen.epoch(spaces)
            cubes = [cube for space in spaces for cube in await self._members(space) if cube.is_live()]
            cubes.sort(key=lambda cube: not cube.pinned)  # stable sort: joining order within each group
            if key is not None:
                self.frozen.keep(key, cubes, epoch=epoch)
        return pack(((cube, 1.0) for cube in cubes), top_k=len(cubes), token_budget=token_budget)

    def invalidate_frozen(self, space: str, changed: Sequence[MemCube] | None, *, by_person: bool) -> None:
        """Memories of ``space`` changed: conversations whose frozen stable block a person's change
        touches (or that hold a memory no longer true) show it on their next request."""
        self.frozen.changed(space, changed, by_person=by_person)

    def _budgets(self, token_budget: int | None) -> tuple[int, int | None]:
        """Token caps of the stable block and of the volatile block (``None``: what the stable
        block leaves). A request's own ``token_budget`` covers both blocks."""
        settings = self.settings
        if token_budget is not None:
            return int(token_budget * settings.stable_share), None
        stable = settings.stable_token_budget
        if stable is None:
            stable = int(self._retrieval.token_budget * settings.stable_share)
        return stable, settings.volatile_token_budget

    async def rebalance(self, space: str) -> bool:
        """Promote hot memories and demote cooled ones (with hysteresis); tell listeners when the
        block changed. Runs in the background; returns whether membership changed."""
        settings = self.settings
        now = utcnow()
        members = await asyncio.to_thread(self._store.stable_members, space)
        hot = await asyncio.to_thread(self._store.hottest, space, limit=4 * max(settings.stable_max, 1))

        def heat(cube: MemCube) -> float:
            return decayed(cube.access.heat, cube.access.last_hit_at, now, half_life=self._half_life)

        promoted = [c for c in members if not c.pinned and c.access.stable_since is not None]
        keep = sorted((c for c in promoted if heat(c) >= settings.demote_heat), key=heat, reverse=True)
        kept_ids = {c.id for c in keep}
        joining = [c for c in hot if c.id not in kept_ids and not c.pinned and heat(c) >= settings.promote_heat]
        chosen = (keep + joining)[: settings.stable_max]
        chosen_ids = {c.id for c in chosen}
        changes: dict[str, Any] = {c.id: None for c in promoted if c.id not in chosen_ids}
        changes.update({c.id: now for c in joining if c.id in chosen_ids})
        if not changes:
            return False
        await asyncio.to_thread(self._store.set_stable, changes)
        self.invalidate(space)
        await self.announce(space)
        return True

    async def current_stable_block(self, space: str) -> list[RetrievedItem]:
        """The space's stable block as a new conversation would get it now."""
        return await self.stable_block([space], token_budget=self._budgets(None)[0])

    async def announce(self, space: str) -> None:
        """Tell listeners what the space's stable block is now (after pins, edits, promotions)."""
        if not self._listeners:
            return
        block = await self.current_stable_block(space)
        for listener in self._listeners:
            listener(space, block)

    # -- per request --------------------------------------------------------------------------

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
        """The stable block takes at most ``stable_share`` of the token budget (or its own budget)
        and is the conversation's frozen one unless not ``freeze`` (a search shows the block as it
        stands). ``top_k`` bounds the volatile block, which gets the rest of the budget or its own
        (a full stable block never starves the memories this very message needs)."""
        budget = self._retrieval.token_budget if token_budget is None else token_budget
        limit = self._retrieval.top_k if top_k is None else top_k
        stable_budget, volatile_budget = self._budgets(token_budget)
        conversation = conversation_id(messages, session=session) if freeze else None
        stable = await self.stable_block(spaces, token_budget=stable_budget, conversation=conversation)
        stable_ids = {cube_id for item in stable for cube_id in item.cube_ids}
        stable_tokens = sum(item.tokens for item in stable)
        room = budget - stable_tokens if volatile_budget is None else volatile_budget
        query = query_from(messages)
        if not query or room <= 0:
            return InjectionPlan(stable=stable)
        if self._retrieval.relevance == "auto" and (reason := skip_reason(last_user_text(messages))):
            return InjectionPlan(stable=stable, reason=reason)
        # Stable members are not excluded from retrieval: being retrieved is what keeps them hot.
        result = await self._retriever.search(
            spaces, query, top_k=limit + len(stable_ids), token_budget=room + stable_tokens
        )
        relevant = [item for item in result.items if not stable_ids.intersection(item.cube_ids)]
        scored = [(item, item.score) for item in relevant]
        key = (tuple(spaces), session) if session else None
        if key is not None:
            scored = await self._with_working_memory(key, scored, exclude=stable_ids)
        text = last_user_text(messages)
        wanted = self._relevant(text, [item for item, _ in scored])
        wanted = [*await self._floor(spaces, text, wanted, room=room, exclude=stable_ids), *wanted]
        volatile = fit(wanted, top_k=limit, token_budget=room, redundant=said_already)
        if key is not None:
            self._remember(key, volatile, scored)
        return InjectionPlan(
            stable=stable,
            volatile=volatile,
            relevant=result.cube_ids,
            degraded=result.degraded,
            considered=len(relevant),
            reason=None if volatile or not relevant else NOTHING_RELEVANT,
        )

    async def _floor(
        self, spaces: Sequence[str], text: str, items: list[RetrievedItem], *, room: int, exclude: set[str]
    ) -> list[RetrievedItem]:
        """Implicit personalisation: a personal turn asking for advice, or one whose memories are
        all far from its words (another language, a vague request), also gets the user's profile
        facts (``PROFILE_QUERY``), at most ``profile_floor`` of them, before the rest."""
        settings = self._retrieval
        if settings.relevance == "off" or not settings.profile_floor or not is_personal(text):
            return []
        best = max((item.similarity or 0.0 for item in items), default=0.0)
        if not asks_advice(text) and best >= settings.impersonal_min_relevance:
            return []
        profile = await self._retriever.search(
            spaces, PROFILE_QUERY, top_k=settings.profile_floor, token_budget=max(room // 4, 0), exclude=exclude
        )
        shown = {cube_id for item in items for cube_id in item.cube_ids}
        return [item for item in profile.items if not shown.intersection(item.cube_ids)]

    def _relevant(self, text: str, items: list[RetrievedItem]) -> list[RetrievedItem]:
        """What is close enough to inject. A personal turn keeps what its memories share with it
        above ``min_relevance`` (lexical hits without a dense score count as close); an impersonal
        one keeps all or nothing: memory only when the space's best match clears
        ``impersonal_min_relevance`` (most general-knowledge questions match nothing that well)."""
        settings = self._retrieval
        if settings.relevance == "off":
            return items
        if not is_personal(text):
            best = max((item.similarity or 0.0 for item in items), default=0.0)
            return items if best >= settings.impersonal_min_relevance else []
        return [item for item in items if item.similarity is None or item.similarity >= settings.min_relevance]

    async def _with_working_memory(
        self, key: tuple[tuple[str, ...], str], scored: list[tuple[RetrievedItem, float]], *, exclude: set[str]
    ) -> list[tuple[RetrievedItem, float]]:
        """Fresh results plus what this session was shown recently (score decayed per turn),
        re-read from the store so nothing deleted or superseded since comes back."""
        remembered = self._working.get(key, {})
        fresh_ids = {cube_id for item, _ in scored for cube_id in item.cube_ids}
        carried = [r for cube_id, r in remembered.items() if cube_id not in fresh_ids and cube_id not in exclude]
        if not carried:
            return scored
        cubes = await asyncio.to_thread(self._store.get_many, [r.item.cube_ids[0] for r in carried])
        decay = self.settings.working_memory_decay
        merged = list(scored)
        for entry in carried:
            cube = cubes.get(entry.item.cube_ids[0])
            if cube is not None and cube.is_live():
                merged.append((item_of(cube, entry.score * decay), entry.score * decay))
        return sorted(merged, key=lambda pair: -pair[1])

    def _remember(
        self, key: tuple[tuple[str, ...], str], injected: list[RetrievedItem], scored: list[tuple[RetrievedItem, float]]
    ) -> None:
        previous = self._working.pop(key, {})
        fresh_ids = {cube_id for item, _ in scored for cube_id in item.cube_ids}
        turns = self.settings.working_memory_turns
        current: dict[str, _Remembered] = {}
        for item in injected:
            cube_id = item.cube_ids[0]
            old = previous.get(cube_id)
            left = turns if cube_id in fresh_ids or old is None else old.turns_left - 1
            if left > 0:
                current[cube_id] = _Remembered(item, item.score, left)
        if current:
            self._working[key] = current
            while len(self._working) > self.settings.sessions:
                self._working.popitem(last=False)
