"""Hybrid retrieval: dense (vector index) and lexical (FTS5 BM25) hits fused by reciprocal rank,
filtered for validity, deduplicated and packed into a token budget.

The result is exactly what would be injected into a prompt: each item carries the text as it is
rendered (dated, so temporal questions can be answered) and its token count, so the search API
and the chat path cannot disagree.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from memcubes.config import RetrievalSettings
from memcubes.cube import MemCube
from memcubes.embedder import Embedder
from memcubes.store import Store, content_hash
from memcubes.tokens import count_tokens
from memcubes.vectors import VectorIndex

_WORD = re.compile(r"[\w][\w'’-]*", re.UNICODE)
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves ever also tell know i'm i've it's
    that's what's""".split()
)


def query_terms(text: str) -> list[str]:
    """Content words of a query, for BM25: lower-cased, stop words dropped, order kept."""
    words = [w.strip("'’-").lower() for w in _WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w and w not in _STOPWORDS and (len(w) > 1 or w.isdigit())))


def render_item(cube: MemCube) -> str:
    """How a memory reads in a prompt: its date first, so the model can reason about time."""
    return f"[{cube.occurred_at.date().isoformat()}] {cube.content}"


@dataclass(frozen=True)
class RetrievedItem:
    cube_ids: list[str]
    text: str
    score: float
    sources: list[str]
    created_at: datetime
    tokens: int
    pinned: bool = False


@dataclass(frozen=True)
class RetrievalResult:
    items: list[RetrievedItem] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def cube_ids(self) -> list[str]:
        return [cube_id for item in self.items for cube_id in item.cube_ids]


def item_of(cube: MemCube, score: float) -> RetrievedItem:
    text = render_item(cube)
    return RetrievedItem(
        cube_ids=[cube.id],
        text=text,
        score=score,
        sources=list(cube.sources),
        created_at=cube.occurred_at,
        tokens=count_tokens(text),
        pinned=cube.pinned,
    )


def fuse(rankings: Iterable[Sequence[str]], *, k: int) -> dict[str, float]:
    """Reciprocal-rank fusion: robust to the incomparable score scales of BM25 and cosine."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cube_id in enumerate(ranking):
            scores[cube_id] = scores.get(cube_id, 0.0) + 1.0 / (k + rank + 1)
    return scores


def pack(ranked: Iterable[tuple[MemCube, float]], *, top_k: int, token_budget: int) -> list[RetrievedItem]:
    """Best first; an item that does not fit is skipped so a shorter one behind it still can.
    Items are rendered and counted only as they are considered (counting is the costly part)."""
    packed: list[RetrievedItem] = []
    used = 0
    for cube, score in ranked:
        if len(packed) >= top_k or used >= token_budget:
            break
        item = item_of(cube, score)
        if used + item.tokens > token_budget:
            continue
        packed.append(item)
        used += item.tokens
    return packed


class Retriever:
    def __init__(self, *, store: Store, index: VectorIndex, embedder: Embedder, settings: RetrievalSettings) -> None:
        self._store = store
        self._index = index
        self._embedder = embedder
        self.settings = settings

    async def search(
        self,
        spaces: Sequence[str],
        query: str,
        *,
        top_k: int | None = None,
        token_budget: int | None = None,
        exclude: Iterable[str] = (),
    ) -> RetrievalResult:
        settings = self.settings
        terms = query_terms(query)
        n = settings.candidates

        async def lexical(space: str) -> list[str]:
            hits = await asyncio.to_thread(self._store.lexical, space, terms, limit=n)
            return [cube_id for cube_id, _ in hits]

        embedding = asyncio.ensure_future(self._embedder.embed([query]))

        async def dense(space: str) -> list[tuple[str, float]]:
            vector = (await embedding)[0]
            return await self._index.query(space, vector, limit=n)

        lexical_runs = [lexical(space) for space in spaces]
        dense_runs = [dense(space) for space in spaces]
        results = await asyncio.gather(*lexical_runs, *dense_runs)
        lexical_rankings: list[list[str]] = results[: len(spaces)]  # type: ignore[assignment]
        dense_hits: list[list[tuple[str, float]]] = results[len(spaces) :]  # type: ignore[assignment]
        dense_rankings = [
            [cube_id for cube_id, similarity in hits if similarity >= settings.min_similarity] for hits in dense_hits
        ]
        scores = fuse([*lexical_rankings, *dense_rankings], k=settings.rrf_k)
        excluded = set(exclude)
        ranked = sorted((cid for cid in scores if cid not in excluded), key=lambda cid: -scores[cid])
        limit = top_k if top_k is not None else settings.top_k
        candidates: list[tuple[MemCube, float]] = []
        seen_hashes: set[str] = set()
        # Cubes are loaded in rank order, a chunk at a time, until enough live ones are found:
        # most requests need only the first chunk of the fused list.
        chunk = max(2 * limit, 24)
        for start in range(0, len(ranked), chunk):
            ids = ranked[start : start + chunk]
            cubes = await asyncio.to_thread(self._store.get_many, ids)
            for cube_id in ids:
                cube = cubes.get(cube_id)
                if cube is None or not cube.is_live() or cube.space not in spaces:
                    continue
                digest = content_hash(cube.content)
                if digest not in seen_hashes:
                    seen_hashes.add(digest)
                    candidates.append((cube, scores[cube_id]))
            if len(candidates) > limit:
                break
        return RetrievalResult(
            pack(
                candidates,
                top_k=limit,
                token_budget=token_budget if token_budget is not None else settings.token_budget,
            )
        )
