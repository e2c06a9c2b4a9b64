"""Retrieval baselines: Okapi BM25, dense all-MiniLM-L6-v2 and their reciprocal-rank fusion.

They are what memproxy's retrieval must beat, so they are written here from their textbook
definitions instead of reusing ``memcubes.retrieval`` (the system under test, which changes as
it is tuned). They only *rank* documents, plain strings that know nothing of any data set; the
harness packs every system's ranking into the token budget with one rule, so their numbers are
comparable with the proxy's.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from memcubes.embedder import Embedder

BASELINES = ("bm25", "dense", "rrf")
RRF_K = 60

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of word characters: the simplest analyser under which "Porto" matches
    "porto"; no stemming and no stop words (BM25's idf already discounts common words)."""
    return _WORD.findall(text.lower())


class BM25:
    """Okapi BM25 over a fixed list of documents, with Lucene's non-negative idf
    ``ln(1 + (N - n + 0.5) / (n + 0.5))``."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        tokenized = [tokenize(document) for document in documents]
        lengths = np.array([len(tokens) for tokens in tokenized], dtype=np.float64)
        average = float(lengths.mean()) if len(lengths) and lengths.any() else 1.0
        self._k1 = k1
        self._norm = k1 * (1.0 - b + b * lengths / average)
        self._size = len(documents)
        postings: dict[str, list[tuple[int, int]]] = {}
        for index, tokens in enumerate(tokenized):
            for term, frequency in Counter(tokens).items():
                postings.setdefault(term, []).append((index, frequency))
        self._postings = {
            term: (np.array([i for i, _ in pairs], dtype=np.int64), np.array([f for _, f in pairs], dtype=np.float64))
            for term, pairs in postings.items()
        }

    def idf(self, term: str) -> float:
        matching = len(self._postings[term][0]) if term in self._postings else 0
        return math.log(1.0 + (self._size - matching + 0.5) / (matching + 0.5))

    def scores(self, query: str) -> npt.NDArray[np.float64]:
        """One score per document; every occurrence of a query term counts, as in Okapi's sum."""
        scores = np.zeros(self._size, dtype=np.float64)
        for term in tokenize(query):
            posting = self._postings.get(term)
            if posting is None:
                continue
            documents, frequencies = posting
            scores[documents] += self.idf(term) * frequencies * (self._k1 + 1.0) / (frequencies + self._norm[documents])
        return scores

    def rank(self, query: str) -> list[int]:
        """Documents sharing at least one term with the query, best first (ties: earlier first)."""
        scores = self.scores(query)
        matching = np.flatnonzero(scores > 0)
        return [int(i) for i in matching[np.argsort(-scores[matching], kind="stable")]]


def dense_rank(documents: npt.NDArray[np.float32], query: npt.NDArray[np.float32]) -> list[int]:
    """Every document by cosine similarity to the query (vectors are L2-normalised), best first."""
    similarities = documents @ query
    return [int(i) for i in np.argsort(-similarities, kind="stable")]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], *, k: int = RRF_K) -> list[int]:
    """Cormack et al.'s RRF: ``sum 1 / (k + rank)`` with 1-based ranks; ties keep first appearance."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, document in enumerate(ranking, start=1):
            scores[document] = scores.get(document, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda document: -scores[document])


@dataclass(frozen=True)
class Ranking:
    """One baseline's answer to one query: document indices, best first, and the time it took."""

    order: list[int]
    seconds: float


async def rank_all(documents: Sequence[str], queries: Sequence[str], *, embedder: Embedder) -> dict[str, list[Ranking]]:
    """Rank ``documents`` for every query with each baseline (``BASELINES``), one entry per query.

    Query embeddings are computed in one batch up front, so the times are the in-process cost of
    scoring and sorting only (RRF's includes both rankings it fuses); they are not comparable with
    latencies measured over HTTP."""
    bm25 = BM25(documents)
    empty = np.zeros((0, embedder.dimension), dtype=np.float32)
    vectors = await embedder.embed(list(documents)) if documents else empty
    query_vectors = await embedder.embed(list(queries)) if queries else empty
    results: dict[str, list[Ranking]] = {name: [] for name in BASELINES}
    for query, query_vector in zip(queries, query_vectors, strict=True):
        started = time.perf_counter()
        lexical = bm25.rank(query)
        lexical_seconds = time.perf_counter() - started
        started = time.perf_counter()
        dense = dense_rank(vectors, query_vector)
        dense_seconds = time.perf_counter() - started
        started = time.perf_counter()
        fused = reciprocal_rank_fusion([lexical, dense])
        fused_seconds = time.perf_counter() - started + lexical_seconds + dense_seconds
        results["bm25"].append(Ranking(lexical, lexical_seconds))
        results["dense"].append(Ranking(dense, dense_seconds))
        results["rrf"].append(Ranking(fused, fused_seconds))
    return results
