"""Hybrid retrieval: the right memories, in few tokens.

    query ─┬─ dense: exact, over the space's vectors read from SQLite and cached in RAM
           │         (``hot_vectors``): each cube scored by its whole text and its best sentence
           │         together; a space above ``ann_min_entries`` is asked of its ANN index
           ├─ lexical: BM25 over the space's words (stop words of the query's language dropped;
           │           beyond English, long words match by their start: ``languages.words``)
           ├─ lexical: BM25 over character bigrams, for a query in Chinese, Japanese or Korean
           └─ time: when the query names a window ("in March 2021", "the week after 2 October",
                    "last month": ``timewords``), the memories dated in it or telling of it,
                    in dense order
    ─▶ reciprocal-rank fusion (weights, k) ─▶ memories of a speaker the query names count more
    ─▶ validity filter (superseded, deleted, expired never come back) ─▶ dedupe
    ─▶ render each memory compactly: its date, and for a long memory only its sentence most
       relevant to the query ─▶ pack into the token budget, best first

What was measured on the LOCOMO development split (``make eval``; evidence recall within 1,000
tokens) is recorded with the presets in ``memcubes.config``. The result is exactly what would be
injected into a prompt: each item carries its rendered text and token count, so the search API
and the chat path cannot disagree.

A chat request waits ``timeout_ms`` for all of this; past its deadline (``memcubes.deadline``) the
store's reads stop in their threads and the steps here stop between them, so a lookup the request
abandoned does not keep a core busy.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from memcubes import deadline, languages, past
from memcubes.config import RetrievalSettings
from memcubes.cube import MemCube, utcnow
from memcubes.cube_cache import CubeCache
from memcubes.embedder import Embedder, Vectors
from memcubes.errors import IndexUnavailable
from memcubes.hot_vectors import HotVectors
from memcubes.sentences import sentence_texts, split_speaker
from memcubes.store import Store, content_hash
from memcubes.timeline import Timeline
from memcubes.timewords import Window, query_window
from memcubes.tokens import count_tokens
from memcubes.vectors import VectorIndex

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SPEAKERS_TTL = 30.0
_HOP_SEEDS = 3  # first-hop memories whose words the second hop adds
_HOP_TERMS = 6
MAX_QUERY_CHARS = 8192  # of a query read for lexical terms and embedded (the model reads 256 tokens)
MAX_QUERY_TERMS = 64
log = logging.getLogger(__name__)


def query_terms(text: str) -> list[str]:
    """Content words of a query, for BM25: folded, the stop words of its language dropped, order
    kept (English queries: exactly as before languages other than English were read). Bounded:
    only the first ``MAX_QUERY_CHARS`` are read and at most ``MAX_QUERY_TERMS`` are kept: the first
    half of them, and the longest (the most specific) of the rest; a 4.8 MB message once became a
    600k-term FTS query that kept a core busy for two minutes after its request had given up on it."""
    terms = languages.query_words(text[:MAX_QUERY_CHARS])
    if len(terms) <= MAX_QUERY_TERMS:
        return terms
    head = MAX_QUERY_TERMS // 2  # where a question usually is; the longest of the rest beside it
    kept = set(terms[:head]) | set(sorted(terms[head:], key=len, reverse=True)[: MAX_QUERY_TERMS - head])
    return [term for term in terms if term in kept]


def render_date(moment: datetime) -> str:
    """``8 May 2023``: unambiguous, and two tokens cheaper than ISO with brackets."""
    return f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def render_item(cube: MemCube, *, sentence: int | None = None) -> str:
    """How a memory reads in a prompt: its date first, so the model can reason about time; with
    ``sentence``, only that sentence of a long memory (with its speaker)."""
    text = cube.content
    if sentence is not None:
        sentences = sentence_texts(cube.content)
        if 0 <= sentence < len(sentences):
            text = sentences[sentence]
    return f"[{past.label(cube, render_date) or render_date(cube.occurred_at)}] {text}"


@dataclass(frozen=True)
class RetrievedItem:
    cube_ids: list[str]
    text: str
    score: float
    sources: list[str]
    created_at: datetime
    tokens: int
    pinned: bool = False
    episode: bool = False
    similarity: float | None = None  # to the query, dense (None: not among the dense candidates)
    space: str = ""  # where the memory lives: chat marks those of shared spaces as shared


@dataclass(frozen=True)
class Explanation:
    """Why a candidate ranked where it did (``explain`` searches, for the inspector): its dense
    similarity and BM25 score (``None``: not in that ranking) and the fused score it is ranked by."""

    cube_id: str
    content: str
    dense: float | None
    lexical: float | None
    fused: float


@dataclass(frozen=True)
class RetrievalResult:
    items: list[RetrievedItem] = field(default_factory=list)
    degraded: bool = False  # the vector index failed: lexical results only
    explained: list[Explanation] = field(default_factory=list)  # live candidates, best first

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def cube_ids(self) -> list[str]:
        return [cube_id for item in self.items for cube_id in item.cube_ids]


def item_of(
    cube: MemCube, score: float, *, sentence: int | None = None, similarity: float | None = None
) -> RetrievedItem:
    text = render_item(cube, sentence=sentence)
    return RetrievedItem(
        cube_ids=[cube.id],
        text=text,
        score=score,
        sources=list(cube.sources),
        created_at=cube.occurred_at,
        tokens=count_tokens(text),
        pinned=cube.pinned,
        episode=cube.is_episode,
        similarity=similarity,
        space=cube.space,
    )


def fuse(rankings: Iterable[tuple[Sequence[str], float]], *, k: int) -> dict[str, float]:
    """Weighted reciprocal-rank fusion: robust to the incomparable score scales of BM25 and
    cosine; a small ``k`` lets the top of each ranking count more than agreement deep down."""
    scores: dict[str, float] = {}
    for ranking, weight in rankings:
        for rank, cube_id in enumerate(ranking):
            scores[cube_id] = scores.get(cube_id, 0.0) + weight / (k + rank + 1)
    return scores


class Costed(Protocol):
    @property
    def tokens(self) -> int: ...


CostedT = TypeVar("CostedT", bound=Costed)


def fit(
    items: Iterable[CostedT],
    *,
    top_k: int,
    token_budget: int,
    redundant: Callable[[CostedT, list[CostedT]], bool] | None = None,
) -> list[CostedT]:
    """Best first; an item that does not fit is skipped so a shorter one behind it still can.
    ``items`` may be a lazy generator: nothing past the last needed item is rendered or counted.
    ``redundant(item, packed)`` skips what the items packed already say.
    (The evaluation harness packs its baselines with this same rule.)"""
    packed: list[CostedT] = []
    used = 0
    for item in items:
        if len(packed) >= top_k or used >= token_budget:
            break
        if redundant is not None and redundant(item, packed):
            continue
        if used + item.tokens <= token_budget:
            packed.append(item)
            used += item.tokens
    return packed


def said_already(item: RetrievedItem, packed: list[RetrievedItem]) -> bool:
    """A fact and its own episode are one piece of evidence: whichever ranks first is packed, the
    other is redundant when the messages it comes from are all covered by the other layer."""
    if not item.sources:
        return False
    covered = {source for other in packed if other.episode != item.episode for source in other.sources}
    return covered.issuperset(item.sources)


def pack(ranked: Iterable[tuple[MemCube, float]], *, top_k: int, token_budget: int) -> list[RetrievedItem]:
    """``fit`` for ranked cubes, rendering each only when it is considered (counting tokens is the
    costly part)."""
    return fit((item_of(cube, score) for cube, score in ranked), top_k=top_k, token_budget=token_budget)


def mentioned(names: Iterable[str], query: str) -> set[str]:
    """Speakers the query names (whole words, as written)."""
    return {name for name in names if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", query)}


@dataclass
class _Speakers:
    loaded_at: float
    names: set[str]
    last_row: int
    changed: bool = False


class Retriever:
    def __init__(
        self,
        *,
        store: Store,
        index: VectorIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
        hot: HotVectors,
    ) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self.settings = settings
        self._hot = hot
        self._speakers: dict[str, _Speakers] = {}
        self._cubes = CubeCache(store)
        self._timeline = Timeline(store)

    def invalidate(
        self, space: str, cube_ids: Iterable[str] | None = None, *, committed: Sequence[MemCube] = ()
    ) -> None:
        """A write to ``space`` (of ``cube_ids``, when known; ``committed``: cubes as they were
        committed, which need not be read again to be dated): those cubes are read again, and the
        next search also reads the speakers of the new rows."""
        changed = None if cube_ids is None else list(cube_ids)
        self._cubes.forget(None if changed is None else [*changed, *(cube.id for cube in committed)])
        self._timeline.invalidate(space, changed)
        self._timeline.written(space, committed)
        cached = self._speakers.get(space)
        if cached is not None:
            cached.changed = True

    async def _speaker_names(self, space: str) -> set[str]:
        """Speakers of the space. New rows are added as they come; a full re-read every
        ``_SPEAKERS_TTL`` drops the names of memories deleted since (a stale extra name only
        means a boost no live memory can receive)."""
        cached = self._speakers.get(space)
        if cached is None or time.monotonic() - cached.loaded_at >= _SPEAKERS_TTL:
            names, last = await asyncio.to_thread(self._store.speakers, space)
            self._speakers[space] = _Speakers(time.monotonic(), names, last)
            return names
        if cached.changed:
            cached.changed = False
            names, cached.last_row = await asyncio.to_thread(self._store.speakers, space, after=cached.last_row)
            cached.names |= names
        return cached.names

    async def dense(self, space: str, vector: Vectors) -> list[tuple[str, float]]:
        """(cube id, similarity), best first: exact and sentence-aware, or ANN for a large space."""
        settings = self.settings
        vectors = await self._hot.space(space)
        if vectors is None:
            hits = await self._index.query(space, vector, limit=settings.candidates)  # may raise: see search
            return [(cube_id, sim) for cube_id, sim in hits if sim >= settings.min_similarity]
        return vectors.ranked(
            vector, sentence_weight=settings.sentence_weight, limit=settings.candidates, floor=settings.min_similarity
        )

    async def _second_hop(self, spaces: Sequence[str], terms: list[str], scores: dict[str, float]) -> None:
        """Multi-hop: the words the best first-hop memories add to the query (a name, a place, an
        event the question only implies) are looked up once more, lexically, and fused in."""
        settings = self.settings
        best = sorted(scores, key=lambda c: -scores[c])[:_HOP_SEEDS]
        cubes = await self._cubes.get_many(best)
        asked = set(terms)
        counts: dict[str, int] = {}
        for cube in cubes.values():
            for term in query_terms(split_speaker(cube.content)[1]):
                if term not in asked and not term.isdigit():
                    counts[term] = counts.get(term, 0) + 1
        added = sorted(counts, key=lambda t: -counts[t])[:_HOP_TERMS]
        if not added:
            return
        runs = await asyncio.gather(
            *(
                asyncio.to_thread(self._store.lexical, space, [*terms, *added], limit=settings.candidates)
                for space in spaces
            )
        )
        for cube_id, score in fuse(
            (([cube_id for cube_id, _ in run], settings.hop_weight) for run in runs), k=settings.rrf_k
        ).items():
            scores[cube_id] = scores.get(cube_id, 0.0) + score

    async def _in_window(self, space: str, window: Window, query: Vectors) -> list[str]:
        """Cubes of the space dated in ``window`` or telling of a time in it, most similar to the
        query first (in time order when the space's vectors are not in RAM)."""
        inside = await self._timeline.inside(space, window)
        vectors = self._hot.get(space)
        if vectors is None or not inside:
            return inside[: self.settings.candidates]
        ranked = vectors.ranked_among(query, inside, sentence_weight=self.settings.sentence_weight)
        return ranked[: self.settings.candidates]

    async def search(
        self,
        spaces: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        token_budget: int | None = None,
        exclude: Iterable[str] = (),
        explain: bool = False,
    ) -> RetrievalResult:
        settings = self.settings
        terms = query_terms(query)
        grams = languages.cjk_grams(query[:MAX_QUERY_CHARS])[: languages.MAX_GRAMS]
        embedding = asyncio.ensure_future(self._embedder.embed([query[:MAX_QUERY_CHARS]]))

        async def lexical(space: str) -> list[tuple[str, float]]:
            return await asyncio.to_thread(self._store.lexical, space, terms, limit=settings.candidates)

        async def lexical_grams(space: str) -> list[str]:
            if not grams:
                return []
            hits = await asyncio.to_thread(self._store.lexical_grams, space, grams, limit=settings.candidates)
            return [cube_id for cube_id, _ in hits]

        degraded = False

        async def dense(space: str) -> list[tuple[str, float]]:
            nonlocal degraded
            try:
                return await self.dense(space, (await embedding)[0])
            except IndexUnavailable as exc:  # lexical results are still worth injecting
                log.warning("vector index unavailable, lexical retrieval only: %s", exc)
                degraded = True
                return []

        async def speakers() -> set[str]:  # needed after the cubes are loaded; read meanwhile
            if settings.speaker_boost == 1.0:
                return set()
            return set().union(*[await self._speaker_names(space) for space in spaces])

        window = query_window(query, utcnow()) if settings.time_weight else None

        async def in_window(space: str) -> list[str]:
            if window is None:
                return []
            return await self._in_window(space, window, (await embedding)[0])

        lexical_hits, gram_runs, dense_hits, time_runs, speaker_names = await asyncio.gather(
            asyncio.gather(*(lexical(space) for space in spaces)),
            asyncio.gather(*(lexical_grams(space) for space in spaces)),
            asyncio.gather(*(dense(space) for space in spaces)),
            asyncio.gather(*(in_window(space) for space in spaces)),
            speakers(),
        )
        deadline.check("fusing rankings")
        query_vector = (await embedding)[0]
        dense_runs = [[cube_id for cube_id, _ in hits] for hits in dense_hits]
        lexical_runs = [[cube_id for cube_id, _ in hits] for hits in lexical_hits]
        similarity = {cube_id: sim for hits in dense_hits for cube_id, sim in hits}
        scores = fuse(  # dense first: equal scores keep its order (the head is sorted stably)
            [
                *((ranking, settings.dense_weight) for ranking in dense_runs),
                *((ranking, settings.lexical_weight) for ranking in lexical_runs),
                *((ranking, settings.lexical_weight) for ranking in gram_runs),
                *((ranking, settings.time_weight) for ranking in time_runs),
            ],
            k=settings.rrf_k,
        )
        if settings.hop_weight:
            deadline.check("the second hop")
            await self._second_hop(spaces, terms, scores)
        excluded = set(exclude)
        limit = top_k if top_k is not None else settings.top_k
        # Only the head of the fused ranking can make it into the result (a named speaker's
        # memories at most double their score): load those cubes, not every candidate.
        head = sorted((c for c in scores if c not in excluded), key=lambda c: -scores[c])[: max(4 * limit, 40)]
        cubes = await self._cubes.get_many(head)
        if speaker_names:
            names = mentioned(speaker_names, query)
            for cube_id, cube in cubes.items():
                if names.intersection(cube.source.names):
                    scores[cube_id] *= settings.speaker_boost
        for cube_id, cube in cubes.items():
            if cube.meta.get("stale"):  # its fact was superseded: history, below the current fact
                scores[cube_id] *= settings.stale_episode_weight
        hot = {space: vectors for space in spaces if (vectors := self._hot.get(space)) is not None}
        earlier = await past.predecessors(cubes, self._cubes.get_many) if past.asks_about_past(query) else {}

        def ranked_items() -> Iterable[RetrievedItem]:
            seen: set[str] = set()
            for cube_id in sorted(cubes, key=lambda c: -scores[c]):
                cube = cubes[cube_id]
                if not cube.is_live() or cube.space not in spaces:
                    continue
                digest = content_hash(cube.content)
                if digest in seen:
                    continue
                seen.add(digest)
                vectors = hot.get(cube.space)
                sentence = vectors.best_sentence(cube_id, query_vector) if settings.compact and vectors else None
                yield item_of(cube, scores[cube_id], sentence=sentence, similarity=similarity.get(cube_id))
                yield from (item_of(old, scores[cube_id]) for old in earlier.get(cube_id, ()))

        budget = token_budget if token_budget is not None else settings.token_budget
        packed = fit(ranked_items(), top_k=limit, token_budget=budget, redundant=said_already)
        explained: list[Explanation] = []
        if explain:
            bm25 = {cube_id: score for hits in lexical_hits for cube_id, score in hits}
            explained = [
                Explanation(c, cube.content, similarity.get(c), bm25.get(c), scores[c])
                for c, cube in sorted(cubes.items(), key=lambda pair: -scores[pair[0]])
                if cube.is_live() and cube.space in spaces
            ]
        return RetrievalResult(packed, degraded=degraded, explained=explained)
