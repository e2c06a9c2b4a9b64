"""The ONNX embedder's int8 default against the exact fp32 model, and what happens to a store
when the embedder changes under it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from memcubes.config import EmbedderSettings, MemorySettings
from memcubes.embedder import Embedder, build_embedder
from memcubes.exchange import Exchange
from memcubes.memory_os import MemoryOS

TEXTS = [
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "I moved from Lisbon to Porto last year and I love the river.",
    "What would go well with sourdough this October?",
    "ok",
]


@pytest.fixture(scope="module")
def fp32() -> Iterator[Embedder]:
    model = build_embedder(EmbedderSettings(precision="fp32"))
    yield model
    model.close()


async def test_int8_vectors_stay_close_to_fp32_and_say_they_differ(embedder: Embedder, fp32: Embedder) -> None:
    assert embedder.name == fp32.name + "@int8"  # a bundle's fp32 vectors are not reused as int8 ones
    quantized, exact = await embedder.embed(TEXTS), await fp32.embed(TEXTS)
    assert quantized.shape == exact.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cosine = (quantized * exact).sum(1)
    assert cosine.min() >= 0.95 and cosine[:3].min() >= 0.98  # a bare "ok" moves most

    # The ranking survives: each text's nearest other text is the same under both.
    def nearest(vectors: np.ndarray) -> list[int]:
        similarity = vectors @ vectors.T - 2 * np.eye(len(vectors))
        return [int(i) for i in similarity.argmax(1)]

    assert nearest(quantized) == nearest(exact)


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
