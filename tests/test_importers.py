"""Importers on real-shaped exports: mem0 ``get_all`` JSON (open source and platform) and MemOS
``GeneralMemCube`` dumps (general_text and tree_text), as functions and through HTTP."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from memcubes import importers
from memcubes.bundle import BundleContents
from memcubes.cube import CubeState, MemCube
from memcubes.errors import BundleError
from tests.conftest import Proxy

FIXTURES = Path(__file__).parent / "fixtures"
MEM0 = FIXTURES / "mem0" / "get_all.json"
MEM0_PLATFORM = FIXTURES / "mem0" / "platform_v1.json"
MEMOS_GENERAL = FIXTURES / "memos" / "general_text"
MEMOS_TREE = FIXTURES / "memos" / "tree_text"


def zipped(folder: Path, *, prefix: str = "dump/", skip: str | None = None) -> bytes:
    """A MemOS dump directory zipped the way people zip folders: inside a top folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            if path.name != skip:
                archive.write(path, prefix + path.name)
    return buffer.getvalue()


def by_origin(contents: BundleContents) -> dict[str, MemCube]:
    return {str((cube.source.model_extra or {})["origin_id"]): cube for cube in contents.cubes}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- mem0 -------------------------------------------------------------------------------------------


def test_mem0_open_source_export_maps_every_field() -> None:
    contents = importers.load(MEM0.read_bytes(), space="user:alice")
    assert contents.format == "mem0" and contents.space == "user:alice"
    cubes = by_origin(contents)
    porto = cubes["3b6c1f8e-2d7a-4e5b-9c1d-0a8f7e6d5c4b"]
    assert porto.content == "Lives in Porto and works as a nurse"
    assert porto.created_at == porto.valid_from == at("2024-06-15T09:30:00.123456+00:00")
    assert porto.updated_at == at("2024-06-20T18:05:42.654321+00:00")
    assert porto.state is CubeState.ACTIVE and porto.space == "user:alice"
    assert porto.source.reader == "mem0"
    assert porto.meta["mem0"] == {
        "hash": "9f2c8a1e7b3d4c5f6a7b8c9d0e1f2a3b",
        "metadata": {"category": "personal", "source_app": "support-bot"},
        "user_id": "alice",
    }
    diet = cubes["a7e4d2c1-5b6f-4a8e-9d3c-2b1a0f9e8d7c"]
    assert diet.updated_at == diet.created_at  # updated_at null: never updated
    dog = cubes["5d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"]
    assert dog.source.roles == ["user"] and dog.source.names == ["alice"]
    assert dog.meta["mem0"]["agent_id"] == "travel-assistant" and dog.meta["mem0"]["run_id"] == "trip-planning-42"
    # ids are ULIDs of the creation time: listing order is creation order
    assert [c.id for c in contents.cubes] == sorted(c.id for c in contents.cubes)
    assert contents.cubes[0].content == "Has a dog named Biscuit"
    assert [(e.event, e.reason) for e in contents.history] == [("IMPORT", "imported from mem0")] * 4


def test_mem0_platform_export_keeps_categories_and_expiry() -> None:
    contents = importers.load(MEM0_PLATFORM.read_bytes(), space="user:alex")
    cubes = by_origin(contents)
    paris = cubes["f38b689d-6b24-45b7-bced-17fbb4d8bac7"]
    assert paris.tags == ["travel"]
    assert paris.expires_at == datetime(2030, 10, 1, tzinfo=UTC)  # shown through 2030-09-30
    marathon = cubes["0b3c8a9e-1f2d-4e5a-8b7c-6d5e4f3a2b1c"]
    assert marathon.tags == ["health", "sports"] and marathon.expires_at is None
    assert marathon.meta["mem0"] == {
        "user_id": "alex",
        "hash": "d41d8cd98f00b204e9800998ecf8427e",
        "metadata": {"priority": "high"},
        "immutable": True,
    }


def test_imported_ids_are_stable_so_a_second_import_meets_the_same_ids() -> None:
    first = importers.load(MEM0.read_bytes(), space="user:alice")
    again = importers.load(MEM0.read_bytes(), space="user:alice", format="mem0")
    assert [c.id for c in first.cubes] == [c.id for c in again.cubes]
    assert len({c.id for c in first.cubes}) == 4


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"results": [{"id": "x", "memory": 7, "hash": "h"}]}, "mem0 memory 1: the memory text is not a string"),
        ([{"memory": "Likes tea", "hash": "h"}], "mem0 memory 1: no id"),
        ([{"id": "x", "memory": "Likes tea", "created_at": "yesterday"}], "mem0 memory 1.created_at: not an ISO 8601"),
        ({"results": "nope"}, "a mem0 export is a list of memories"),
        ([{"id": "a", "memory": "m", "hash": "h"}, {"id": "a", "memory": "m", "hash": "h"}], "memory 'a' twice"),
    ],
)
def test_a_malformed_mem0_export_is_refused(document: object, complaint: str) -> None:
    with pytest.raises(BundleError, match=complaint):
        importers.load(json.dumps(document).encode(), space="user:alice", format="mem0")


def test_foreign_formats_need_a_space() -> None:
    with pytest.raises(BundleError, match="a mem0 export names no memproxy space"):
        importers.load(MEM0.read_bytes())
    with pytest.raises(BundleError, match="a MemOS dump names no memproxy space"):
        importers.load(zipped(MEMOS_TREE))


# -- MemOS ------------------------------------------------------------------------------------------


def test_memos_general_text_dump() -> None:
    contents = importers.load(zipped(MEMOS_GENERAL), space="user:root")
    assert contents.format == "memos" and len(contents.cubes) == 3
    cubes = by_origin(contents)
    cat = cubes["b41a6e7c-2f1d-4c9e-8a3b-5d6e7f8a9b0c"]
    assert cat.content == "The user's cat Miso turned three years old on May 3, 2025."
    assert cat.valid_from == at("2025-05-03T00:00:00+00:00")  # memory_time
    assert cat.created_at == cat.updated_at == at("2025-05-04T10:22:31.123456+00:00")
    assert cat.tags == ["pets", "birthday"] and cat.confidence == pytest.approx(0.95)
    memos = cat.meta["memos"]
    assert memos["layout"] == "general_text" and memos["cube_id"] == "root/mem_cube_2"
    assert memos["type"] == "event" and memos["entities"] == ["Miso", "cat"] and memos["title"] == "Cat birthday"
    assert "vector" not in memos and "embedding" not in memos
    bakery = cubes["0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]
    assert bakery.state is CubeState.ARCHIVED and bakery.valid_from == at("2019-09-01T00:00:00+00:00")
    tea = cubes["6f0e9d8c-7b6a-4594-8372-61504f3e2d1c"]
    assert tea.valid_from == tea.created_at and tea.confidence == pytest.approx(0.8)


def test_memos_tree_text_dump() -> None:
    contents = importers.load(zipped(MEMOS_TREE), space="user:alice")
    cubes = by_origin(contents)
    assert "77aa88bb-99cc-4dde-8eff-001122334455" not in cubes  # the WorkingMemory copy
    assert len(cubes) == 4
    move = cubes["8d3f2e1a-9b8c-4d7e-a6f5-4e3d2c1b0a99"]
    assert move.content.startswith("Alice moved to Porto in June 2024")
    assert move.source.message_ids == ["msg-101", "msg-102"] and move.source.roles == ["user", "assistant"]
    assert move.created_at == at("2024-06-15T10:02:11.482901+00:00") and move.confidence == pytest.approx(0.99)
    memos = move.meta["memos"]
    assert (memos["memory_type"], memos["key"], memos["layout"]) == ("LongTermMemory", "Residence change", "tree_text")
    assert memos["background"].startswith("Alice talked about relocating")
    assert memos["sources"][0]["content"] == "I finally moved to Porto!"
    job = cubes["1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"]
    assert job.confidence == pytest.approx(0.99) and job.meta["memos"]["memory_type"] == "UserMemory"
    lisbon = cubes["abcdef01-2345-4678-89ab-cdef01234567"]
    assert lisbon.state is CubeState.ARCHIVED and lisbon.source.message_ids == ["msg-007"]  # sources as a JSON string
    assert lisbon.meta["memos"]["edges"] == [{"type": "MERGED_TO", "target": "8d3f2e1a-9b8c-4d7e-a6f5-4e3d2c1b0a99"}]
    topic = cubes["fedcba98-7654-4321-8fed-cba987654321"]
    assert [e["type"] for e in topic.meta["memos"]["edges"]] == ["PARENT", "PARENT"]


def test_a_bare_textual_memory_file_is_recognised() -> None:
    tree = importers.load((MEMOS_TREE / "textual_memory.json").read_bytes(), space="user:alice")
    general = importers.load((MEMOS_GENERAL / "textual_memory.json").read_bytes(), space="user:root")
    assert (tree.format, len(tree.cubes), general.format, len(general.cubes)) == ("memos", 4, "memos", 3)
    assert "cube_id" not in tree.cubes[0].meta["memos"]  # no config.json: no cube id


def test_an_incomplete_memos_dump_is_refused() -> None:
    with pytest.raises(BundleError, match=r"dump/textual_memory\.json is missing"):
        importers.load(zipped(MEMOS_TREE, skip="textual_memory.json"), space="user:alice")
    with pytest.raises(BundleError, match=r"no manifest\.json .* and no config\.json"):
        importers.load(zipped(MEMOS_TREE, skip="config.json"), space="user:alice")
    config = json.loads((MEMOS_TREE / "config.json").read_text())
    config["text_mem"]["backend"] = "uninitialized"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    with pytest.raises(BundleError, match=r"text_mem\.backend 'uninitialized' is not one of"):
        importers.load(buffer.getvalue(), space="user:alice")
    with pytest.raises(BundleError, match="not a MemOS textual memory"):
        importers.load(json.dumps({"nodes": "none"}).encode(), space="user:alice", format="memos")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", (MEMOS_TREE / "config.json").read_text())
        archive.writestr("textual_memory.json", (MEMOS_GENERAL / "textual_memory.json").read_text())
    with pytest.raises(BundleError, match="does not have the tree_text layout"):
        importers.load(buffer.getvalue(), space="user:alice")


# -- through HTTP -----------------------------------------------------------------------------------


def search(proxy: Proxy, user: str, query: str) -> list[str]:
    with proxy.http() as http:
        found = http.post("/v1/memories/search", json={"user": user, "query": query}).json()
    return [item["text"] for item in found["results"]]


def test_a_mem0_export_imported_over_http_is_searchable(proxy: Proxy) -> None:
    with proxy.http() as http:
        response = http.post("/v1/spaces/import", params={"space": "user:alice"}, content=MEM0.read_bytes())
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["format"], report["imported"], report["vectors_embedded"]) == ("mem0", 4, 4)
        again = http.post("/v1/spaces/import", params={"space": "user:alice"}, content=MEM0.read_bytes()).json()
        assert (again["imported"], again["skipped"]) == (0, 4)
        missing = http.post("/v1/spaces/import", content=MEM0.read_bytes())
        assert missing.status_code == 400 and "say which space" in missing.json()["error"]["message"]
    texts = search(proxy, "alice", "What is the name of my dog?")
    assert texts[0].endswith("Has a dog named Biscuit") and "2023" in texts[0]
    assert any("window seats" in text for text in search(proxy, "alice", "Which seat do I like on a plane?"))


def test_a_memos_dump_imported_over_http_is_searchable(proxy: Proxy) -> None:
    with proxy.http() as http:
        response = http.post("/v1/spaces/import", params={"space": "user:alice"}, content=zipped(MEMOS_TREE))
        assert response.status_code == 200, response.text
        assert (response.json()["imported"], response.json()["vectors_embedded"]) == (4, 3)  # archived: not indexed
        page = http.get("/v1/memories", params=[("user", "alice"), ("state", "archived")]).json()["data"]
        assert [m["content"] for m in page] == ["Alice lives in Lisbon."]
    texts = search(proxy, "alice", "Where does Alice live now?")
    assert any("moved to Porto" in text for text in texts[:2])
    assert not any(text.endswith("Alice lives in Lisbon.") for text in texts)
