"""Knowledge updates through chat: a change told in other words supersedes the fact it replaces,
a plan, a visit, a past fact or someone else's news supersedes nothing, and the past is shown as
past when a question asks for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memcubes.embedder import Embedder
from proxy.eval.updates import evaluate_updates, load_corpus
from tests.conftest import Proxy, own_proxy

CORPUS = Path(__file__).parent / "fixtures" / "updates_corpus.txt"


@pytest.fixture(scope="module")
def shared(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with own_proxy(embedder, tmp_path_factory.mktemp("updates")) as proxy:
        yield proxy


def test_the_corpus_through_chat_in_the_default_mode(shared: Proxy) -> None:
    scenarios = load_corpus(CORPUS)
    assert sum(s.target is not None for s in scenarios) >= 120
    assert sum(s.target is None for s in scenarios) >= 60
    report = evaluate_updates(scenarios, url=shared.url, model="fake")
    print(report.table(), *report.failures(), sep="\n")
    assert report.update_rate >= 0.90
    assert report.false_rate <= 0.03
