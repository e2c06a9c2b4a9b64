"""Memory in languages other than English: what is kept, how it is found, end to end.

The multilingual set (``fixtures/multilingual.json``: 8 languages, 20 fact/question pairs each,
questions worded differently) goes through chat in the default configuration, and once more with
the multilingual embedder: each fact is said in chat, then each question is asked, and the fact
must be in what was injected for at least 80% of the questions of every language. The table per
language is printed (``pytest -s``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memcubes.config import EmbedderSettings, MemorySettings
from memcubes.cube import MemCube
from memcubes.embedder import Embedder, build_embedder
from memcubes.exchange import Exchange
from memcubes.languages import cjk_grams, extract_facts, language_of, query_words
from memcubes.memory_os import MemoryOS
from memcubes.store import ChangeSet, Store
from proxy import build_app
from proxy.dev.serve_thread import ServerThread
from tests.conftest import Backend, Proxy, proxy_settings

PAIRS: dict[str, list[list[str]]] = {
    language: pairs
    for language, pairs in json.loads((Path(__file__).parent / "fixtures" / "multilingual.json").read_text()).items()
    if not language.startswith("_")
}
TARGET = 0.8


# -- what is kept -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        ("Eu moro em Coimbra com a minha avó.", ["Eu moro em Coimbra com a minha avó."]),
        ("Moro no Porto.", ["Moro no Porto."]),  # no pronoun, and too short for the identifier to be sure
        ("Sou vegetariano, o que devo cozinhar?", ["Sou vegetariano."]),
        ("Olá! Obrigado. Onde é que eu moro?", []),
        ("Por favor, lembra-te que moro em Braga.", ["Moro em Braga."]),
        ("Por favor, escreve um poema sobre o mar.", []),
        ("Mi perro se llama Toby. ¿Puedes escribirme un poema sobre él?", ["Mi perro se llama Toby."]),
        ("Escribe un poema sobre el mar.", []),
        ("Ma fille s'appelle Chloé.", ["Ma fille s'appelle Chloé."]),
        ("Si j'étais riche, j'habiterais à Monaco.", []),
        ("Seit 2019 wohne ich in Hamburg. Kannst du mir helfen?", ["Seit 2019 wohne ich in Hamburg."]),
        ("Übrigens, meine Tochter heißt Mia.", ["Meine Tochter heißt Mia."]),
        ("Vivo con i miei genitori a Bologna.", ["Vivo con i miei genitori a Bologna."]),  # not "I miei"
        ("Antes vivía en Bilbao, pero me mudé a Valencia.", ["Antes vivía en Bilbao, pero me mudé a Valencia."]),
        ("私の猫の名前はミケです。私の猫は何歳ですか？", ["私の猫の名前はミケです。"]),
        ("我在上海的一家银行工作。", ["我在上海的一家银行工作。"]),
        ("Я живу в Москве с женой.", ["Я живу в Москве с женой."]),  # no rules: kept as written
        ("Привет!", []),
        ("I live in Lisbon and I work as a nurse.", ["I live in Lisbon and I work as a nurse."]),
        ("Tell me a joke", []),
    ],
)
def test_statements_are_kept_in_their_own_language(message: str, kept: list[str]) -> None:
    assert extract_facts(message) == kept


def test_english_is_read_as_english() -> None:
    for text in ("Bye!", "ok", "Where do I live?", "Ah ha ha, yeah, JUST DOING IT!"):
        assert language_of(text) == "en"
    assert language_of("Trabalho num banco em Lisboa.") == "pt"
    assert language_of("私の猫") == "ja"  # another script is never English, however short


# -- how it is found --------------------------------------------------------------------------


def test_query_words_drop_the_stop_words_of_the_query_language() -> None:
    assert query_words("Where do I live?") == ["live"]
    assert query_words("What's my sister's name?") == ["sister's", "name"]  # English as before
    assert query_words("Onde é que eu vivo agora?") == ["vivo", "agora"]
    # A long word of another language matches by its start: "masco*" finds "mascota" and "mascotas".
    assert query_words("¿Cómo se llama mi mascota?") == ["llama", "masco*"]
    assert query_words("Comment s'appelle ma fille ?") == ["appel*", "fille"]
    assert query_words("Dove lavora l'amico di mio fratello?") == ["lavor*", "amico", "fratel*"]
    assert query_words("Wie heißt meine Schwester?") == ["heißt", "schwest*"]  # the index folds ß itself


def test_a_word_of_another_form_is_found_by_its_start(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "memproxy.db")
    try:
        allergy = MemCube(space="u", content="Sou alérgica a camarão.")
        store.apply(ChangeSet(cubes=[allergy, MemCube(space="u", content="Moro em Coimbra.")]))
        hits = store.lexical("u", query_words("Tenho alguma alergia alimentar?"), limit=5)
        assert [cube_id for cube_id, _ in hits] == [allergy.id]
    finally:
        store.close()


def test_cjk_text_is_split_into_bigrams() -> None:
    assert cjk_grams("我在银行工作") == ["我在", "在银", "银行", "行工", "工作"]
    assert cjk_grams("東京のGoogleで働く") == ["東京", "京の", "で働", "働く"]
    assert cjk_grams("Lisbon") == []


def test_a_data_dir_from_before_the_bigram_index_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "memproxy.db"
    store = Store.open(path)
    cat = MemCube(space="u", content="私の猫の名前はミケです。")
    bank = MemCube(space="u", content="我在上海的一家银行工作。")
    store.apply(ChangeSet(cubes=[cat, bank, MemCube(space="u", content="I live in Lisbon.")]))
    assert [hit for hit, _ in store.lexical_grams("u", cjk_grams("我在哪里工作？"), limit=5)] == [bank.id]
    store.close()
    with sqlite3.connect(path) as conn:  # what a data dir written before this index looks like
        conn.execute("DROP TABLE cubes_grams")
        conn.execute("DELETE FROM meta WHERE key = 'grams_index'")
        conn.execute("DROP TABLE schema_migrations")

    store = Store.open(path)
    try:
        assert [hit for hit, _ in store.lexical_grams("u", cjk_grams("私の猫は何という名前？"), limit=5)] == [cat.id]
        store.purge(cat.id)
        assert store.lexical_grams("u", cjk_grams("私の猫は何という名前？"), limit=5) == []
    finally:
        store.close()


# -- end to end, through chat -------------------------------------------------------------------


def _recall(proxy: Proxy, backend: Backend) -> dict[str, float]:
    """Says every fact in chat (one conversation per language), then asks every question: the
    share of questions, per language, whose fact was in the prompt the model received."""
    client = proxy.openai()
    for pairs in PAIRS.values():
        messages: list[dict[str, str]] = []
        for fact, _, _ in pairs:
            messages += [{"role": "user", "content": fact}, {"role": "assistant", "content": "OK."}]
        client.chat.completions.create(model="fake", messages=messages[:-1], user="polyglot")  # type: ignore[arg-type]
    proxy.wait_writeback()
    recall = {}
    for language, pairs in PAIRS.items():
        found = 0
        for _, question, answer in pairs:
            client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": question}], user="polyglot"
            )
            found += answer in json.dumps(backend.last_body()["messages"], ensure_ascii=False)
        recall[language] = found / len(pairs)
    return recall


def _report(title: str, recall: dict[str, float]) -> None:
    print(f"\n{title}\n" + "\n".join(f"  {language}: {share:.0%}" for language, share in recall.items()))


def test_facts_in_eight_languages_are_injected_for_questions_worded_otherwise(
    backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    assert len(PAIRS) >= 8 and all(len(pairs) >= 20 for pairs in PAIRS.values())
    recall = _recall(start_proxy(proxy_settings(backend.url, tmp_path / "data")), backend)
    _report("default configuration (all-MiniLM-L6-v2)", recall)
    assert all(share >= TARGET for share in recall.values()), recall


@pytest.fixture
def multilingual_proxy(backend: Backend, tmp_path: Path) -> Iterator[Proxy]:
    settings = proxy_settings(backend.url, tmp_path / "data", memory={"embedder": {"model": "multilingual"}})
    proxy = Proxy(ServerThread(build_app(settings)).start(), settings)
    yield proxy
    proxy.stop()


def test_with_the_multilingual_embedder_too(backend: Backend, multilingual_proxy: Proxy) -> None:
    recall = _recall(multilingual_proxy, backend)
    _report("embedder.model: multilingual", recall)
    assert all(share >= TARGET for share in recall.values()), recall


async def test_reindex_switches_a_data_dir_to_the_multilingual_embedder(embedder: Embedder, tmp_path: Path) -> None:
    settings = MemorySettings(data_dir=tmp_path / "data")
    memory = await MemoryOS.open(settings, embedder=embedder)
    facts = ["Mein Hund heißt Bello.", "Meine Schwester heißt Greta.", "Ich wohne in Köln.", "Ich bin Tischler."]
    await memory.add(Exchange(space="u", facts=facts, mode="heuristic"), sync=True)
    await memory.close()

    multilingual = build_embedder(EmbedderSettings(model="multilingual"))
    memory = await MemoryOS.open(settings, embedder=multilingual)
    try:
        assert (multilingual.name, multilingual.dimension) == ("google/universal-sentence-encoder-multilingual-3", 512)
        before = await memory.search(["u"], "Wie heißt meine Schwester?", top_k=1)  # 384-dim vectors, 512-dim query
        assert "Greta" in before.items[0].text  # the word index still answers
        assert await memory.reindex() == 4
        assert memory.store.get_meta("embedder") == multilingual.name
        # Asked in another language, no word in common: the multilingual vectors find it.
        after = await memory.search(["u"], "What is my sister called?", top_k=1)
        assert "Greta" in after.items[0].text
    finally:
        await memory.close()
        multilingual.close()
