"""The ONNX embedder's int8 default against the exact fp32 model, and what happens to a store
when the embedder changes under it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memcubes.config import EmbedderSettings, MemorySettings
from memcubes.embedder import BatchedEmbedder, Embedder, Vectors, build_embedder
from memcubes.exchange import Exchange
from memcubes.memory_os import MemoryOS

TEXTS = [
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "I moved from Lisbon to Porto last year and I love the river.",
    "What would go well with sourdough this October?",
    "ok",
]
# Each text's paraphrase: under either model, a text's nearest neighbour among all of them.
PARAPHRASES = [
    "On 7 May 2023 Caroline attended an LGBTQ support group.",
    "Last year I relocated from Lisbon to Porto, and the river is lovely.",
    "What pairs nicely with sourdough bread in October?",
    "okay",
]


@pytest.fixture(scope="module")
def fp32() -> Iterator[BatchedEmbedder]:
    model = build_embedder(EmbedderSettings(precision="fp32"))
    assert isinstance(model, BatchedEmbedder)
    yield model
    model.close()


async def test_int8_vectors_stay_close_to_fp32_and_say_they_differ(embedder: Embedder, fp32: Embedder) -> None:
    assert embedder.name == fp32.name + "@int8"  # a bundle's fp32 vectors are not reused as int8 ones
    quantized, exact = await embedder.embed(TEXTS), await fp32.embed(TEXTS)
    assert quantized.shape == exact.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosine = (quantized * exact).sum(1)
    assert cosine.min() >= 0.95 and cosine[:3].min() >= 0.98  # a bare "ok" moves most

    # The ranking survives: under both, each text's nearest other text is its paraphrase. (Which
    # unrelated sentence a bare "ok" is closest to is noise, and differs between CPUs.)
    def nearest(vectors: np.ndarray) -> list[int]:
        similarity = vectors @ vectors.T - 2 * np.eye(len(vectors))
        return [int(i) for i in similarity.argmax(1)]

    both = [*TEXTS, *PARAPHRASES]
    partners = [i + len(TEXTS) for i in range(len(TEXTS))] + list(range(len(TEXTS)))
    assert nearest(await embedder.embed(both)) == nearest(await fp32.embed(both)) == partners


def test_a_batch_of_mixed_lengths_keeps_each_text_in_its_row(fp32: BatchedEmbedder) -> None:
    """Texts are encoded in groups of similar length (less padding): with the exact model every
    row is the vector of its own text, as if encoded alone."""
    texts = [*TEXTS, *PARAPHRASES, "a much longer text " * 30]
    together = fp32._encode(texts)
    alone = np.concatenate([fp32._encode([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


async def test_a_store_built_by_another_embedder_warns_until_reindexed(
    embedder: Embedder, fp32: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = MemorySettings(data_dir=tmp_path / "data")
    memory = await MemoryOS.open(settings, embedder=embedder)
    await memory.add(Exchange(space="user:ines", facts=["Ines sails on the Douro"], mode="heuristic"), sync=True)
    await memory.close()

    with caplog.at_level(logging.WARNING, logger="memcubes.memory_os"):
        memory = await MemoryOS.open(settings, embedder=fp32)
    assert f"built with {embedder.name} but the embedder is {fp32.name}" in caplog.text
    try:
        assert await memory.reindex() == 1
        assert memory.store.get_meta("embedder") == fp32.name
        plan = await memory.search(["user:ines"], "Where does Ines sail?")
        assert any("Douro" in item.text for item in plan.items)
    finally:
        await memory.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memcubes.memory_os"):
        memory = await MemoryOS.open(settings, embedder=fp32)
    await memory.close()
    assert "built with" not in caplog.text


class Gated(BatchedEmbedder):
    """Encodes instantly, except that background texts wait until ``release`` is set."""

    name, dimension = "gated", 2

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__(EmbedderSettings())

    def _encode(self, texts: list[str]) -> Vectors:
        if any(text.startswith("background") for text in texts):
            self.release.wait(10)
        return np.ones((len(texts), 2), dtype=np.float32)


async def test_a_query_does_not_wait_for_background_embedding() -> None:
    """Write-back batches run on their own thread: a lookup's query is encoded meanwhile."""
    gated = Gated()
    try:
        background = asyncio.ensure_future(gated.embed(["background 1", "background 2"], urgent=False))
        await asyncio.sleep(0.05)
        assert (await asyncio.wait_for(gated.embed(["a query"]), 2)).shape == (1, 2)
        assert not background.done()
        gated.release.set()
        assert (await asyncio.wait_for(background, 2)).shape == (2, 2)
    finally:
        gated.release.set()
        gated.close()
