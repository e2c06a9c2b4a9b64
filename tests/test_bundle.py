"""Portable bundles through real HTTP: export, import into an empty data dir, conflicts,
re-homing, re-embedding, and refusal (atomic) of corrupt or tampered bundles."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from memcubes.bundle import read_bundle
from memcubes.errors import BundleError
from tests.conftest import Backend, Proxy, proxy_settings

STATES = ("active", "superseded", "deleted", "archived")
QUERIES = ("Where do I live?", "What is my dog called?", "What do I eat?", "Tell me about my sister")


def say(http: httpx.Client, text: str, at: str) -> dict[str, Any]:
    body = {
        "user": "alice",
        "mode": "heuristic",
        "sync": True,
        "messages": [{"role": "user", "content": text, "created_at": at}],
    }
    response = http.post("/v1/memories", json=body)
    assert response.status_code == 200, response.text
    [change] = response.json()["results"]
    return dict(change)


def everything(http: httpx.Client, space: str = "user:alice") -> list[dict[str, Any]]:
    params = [("space", space), ("limit", "500")] + [("state", s) for s in STATES]
    response = http.get("/v1/memories", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def histories(http: httpx.Client, cubes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each cube's history without ``seq`` (a row number local to each store)."""
    result = {}
    for cube in cubes:
        events = http.get(f"/v1/memories/{cube['id']}/history").json()["data"]
        result[cube["id"]] = [{k: v for k, v in event.items() if k != "seq"} for event in events]
    return result


def searches(http: httpx.Client, user: str = "alice") -> list[Any]:
    return [http.post("/v1/memories/search", json={"user": user, "query": q}).json() for q in QUERIES]


def build_space(http: httpx.Client) -> dict[str, str]:
    """Facts with a history: an update (Lisbon → Porto), a soft delete and an edit."""
    ids = {
        "lisbon": say(http, "I live in Lisbon.", "2021-03-01T10:00:00Z")["id"],
        "dog": say(http, "I have a dog named Biscuit.", "2022-05-08T13:56:00Z")["id"],
        "diet": say(http, "I'm vegetarian.", "2022-09-01T08:00:00Z")["id"],
        "sister": say(http, "My sister Ana lives in Berlin.", "2023-01-15T19:00:00Z")["id"],
        "porto": say(http, "I moved to Porto.", "2024-06-15T09:30:00Z")["id"],
    }
    assert http.delete(f"/v1/memories/{ids['sister']}").status_code == 200
    edit = {"content": "I have a beagle named Biscuit.", "tags": ["pets"], "pinned": True}
    assert http.patch(f"/v1/memories/{ids['dog']}", json=edit).status_code == 200
    return ids


def export(http: httpx.Client, space: str = "user:alice") -> bytes:
    response = http.get(f"/v1/spaces/{space}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == f'attachment; filename="{space.replace(":", "_")}.memcube"'
    return response.content


def upload(http: httpx.Client, data: bytes, **params: str) -> httpx.Response:
    return http.post("/v1/spaces/import", content=data, params=params)


def fresh(start_proxy: Callable[..., Proxy], backend: Backend, data_dir: Path, **overrides: Any) -> Proxy:
    return start_proxy(proxy_settings(backend.url, data_dir, **overrides))


def rebuild(
    data: bytes,
    *,
    replace: dict[str, bytes | None] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    checksums: bool = True,
) -> bytes:
    """The bundle with members replaced (``None`` drops one) and the manifest edited; with
    ``checksums`` the manifest is made to match the new members (so only the change is wrong)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    document = json.loads(members.pop("manifest.json"))
    for name, content in (replace or {}).items():
        if content is None:
            members.pop(name)
        else:
            members[name] = content
    if checksums:
        for name, content in members.items():
            if name in document["members"]:
                document["members"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    if manifest is not None:
        manifest(document)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", json.dumps(document))
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def member(data: bytes, name: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name)


# -- the round trip ---------------------------------------------------------------------------


def test_round_trip_into_an_empty_data_dir_is_identical(
    proxy: Proxy, backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    with proxy.http() as http:
        ids = build_space(http)
        cubes = everything(http)
        history = histories(http, cubes)
        bundle = export(http)
        found = searches(http)
    by_id = {cube["id"]: cube for cube in cubes}
    assert {cube["state"] for cube in cubes} == {"active", "superseded", "deleted"}
    assert by_id[ids["lisbon"]]["superseded_by"] == ids["porto"]
    assert by_id[ids["lisbon"]]["valid_to"] == by_id[ids["porto"]]["valid_from"] == "2024-06-15T09:30:00Z"

    manifest = json.loads(member(bundle, "manifest.json"))
    assert manifest["format"] == "memcube-bundle" and manifest["format_version"] == 1
    assert manifest["space"] == "user:alice" and manifest["generator"]["name"] == "memproxy"
    assert manifest["embedder"] == {"id": "sentence-transformers/all-MiniLM-L6-v2@int8", "dimension": 384}
    assert manifest["counts"]["cubes"] == len(cubes) == 5
    assert manifest["counts"]["states"] == {"active": 3, "deleted": 1, "superseded": 1}
    assert manifest["counts"]["history"] == sum(len(events) for events in history.values())
    assert manifest["counts"]["embeddings"] == 3  # the active cubes: the only ones indexed

    other = fresh(start_proxy, backend, tmp_path / "other")
    with other.http() as http:
        response = upload(http, bundle)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["imported"] == 5 and report["skipped"] == report["overwritten"] == 0
        assert report["vectors_reused"] == 3 and report["vectors_embedded"] == 0
        assert everything(http) == cubes
        assert histories(http, cubes) == history
        assert searches(http) == found
    assert any("Porto" in item["text"] for item in found[0]["results"])
    assert not any("Lisbon" in item["text"] for item in found[0]["results"])


def test_a_different_embedder_means_re_embedding_with_the_same_results(
    proxy: Proxy, backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    with proxy.http() as http:
        build_space(http)
        bundle = export(http)
        found = searches(http)

    def other_model(document: dict[str, Any]) -> None:
        document["embedder"] = {"id": "intfloat/e5-small-v2", "dimension": 384}

    other = fresh(start_proxy, backend, tmp_path / "other")
    with other.http() as http:
        report = upload(http, rebuild(bundle, manifest=other_model)).json()
        assert report["vectors_reused"] == 0 and report["vectors_embedded"] == 3
        assert searches(http) == found  # same model in fact: re-embedding gives the same vectors


def test_export_of_an_unknown_space_is_an_empty_bundle(proxy: Proxy) -> None:
    with proxy.http() as http:
        contents = read_bundle(export(http, "user:nobody"))
    assert contents.space == "user:nobody" and contents.cubes == [] and contents.history == []


# -- a bundle another system writes from the spec -------------------------------------------------


def npy(matrix: np.ndarray) -> bytes:
    """``.npy`` written by hand, as docs/memcube-bundle.md describes it (no numpy.save)."""
    rows, columns = matrix.shape
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + matrix.astype("<f4").tobytes()


def handwritten(cubes: list[dict[str, Any]], events: list[dict[str, Any]], vectors: dict[str, Any]) -> bytes:
    members = {
        "cubes.jsonl": "".join(json.dumps(c) + "\n" for c in cubes).encode(),
        "history.jsonl": "".join(json.dumps(e) + "\n" for e in events).encode(),
    }
    if vectors:
        members["embeddings.npy"] = npy(np.array(list(vectors.values()), dtype=np.float32))
        members["embedding_ids.json"] = json.dumps(list(vectors)).encode()
    manifest = {
        "format": "memcube-bundle",
        "format_version": 1,
        "space": "agent:support",
        "created_at": "2025-01-01T00:00:00Z",
        "generator": {"name": "other-system", "version": "3.2"},
        "embedder": {"id": "sentence-transformers/all-MiniLM-L6-v2@int8", "dimension": 384},
        "counts": {"cubes": len(cubes), "history": len(events), "embeddings": len(vectors)},
        "members": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in members.items()},
        "x_other_system": {"exported_by": "ops"},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_bundle_written_from_the_spec_imports_and_is_searchable(proxy: Proxy) -> None:
    refunds = {
        "id": "01HZZZZZZZZZZZZZZZZZZZZZZ1",
        "space": "agent:support",
        "content": "Refunds are issued within 14 days of a return.",
        "created_at": "2024-02-01T09:00:00Z",
        "updated_at": "2024-02-01T09:00:00Z",
        "valid_from": "2024-02-01T09:00:00+01:00",
        "tags": ["policy"],
    }
    hours = {
        "id": "01HZZZZZZZZZZZZZZZZZZZZZZ2",
        "space": "agent:support",
        "content": "The support desk is open from 8am to 6pm on weekdays.",
        "created_at": "2024-03-01T09:00:00Z",
        "updated_at": "2024-03-01T09:00:00Z",
    }
    events = [{"event": "ADD", "at": c["created_at"], "reason": "seeded", "cube": c} for c in (refunds, hours)]
    with proxy.http() as http:
        embedding = np.zeros(384, dtype=np.float32)
        embedding[0] = 1.0
        report = upload(http, handwritten([refunds, hours], events, {hours["id"]: embedding})).json()
        assert (report["space"], report["imported"], report["history"]) == ("agent:support", 2, 2)
        assert (report["vectors_reused"], report["vectors_embedded"]) == (1, 1)
        cube = http.get(f"/v1/memories/{refunds['id']}").json()
        assert cube["tags"] == ["policy"] and cube["valid_from"] == "2024-02-01T08:00:00Z"  # the same instant, in UTC
        assert cube["confidence"] == 1.0 and cube["state"] == "active" and cube["version"] == 1
        found = http.post("/v1/memories/search", json={"space": "agent:support", "query": "how long do refunds take"})
        assert found.json()["results"][0]["id"] == refunds["id"]
        history = http.get(f"/v1/memories/{refunds['id']}/history").json()["data"]
        assert [(h["event"], h["reason"]) for h in history] == [("ADD", "seeded")]


# -- refusal --------------------------------------------------------------------------------------


def _flip_a_byte(data: bytes) -> bytes:
    cubes = bytearray(member(data, "cubes.jsonl"))
    cubes[40] ^= 0x01
    return rebuild(data, replace={"cubes.jsonl": bytes(cubes)}, checksums=False)


def _bad_json_line(data: bytes) -> bytes:
    return rebuild(data, replace={"cubes.jsonl": member(data, "cubes.jsonl") + b'{"id": "01X", "space": \n'})


def _not_a_cube(data: bytes) -> bytes:
    line = json.dumps({"id": "01X", "space": "user:alice", "content": "x", "mood": "happy"}).encode() + b"\n"

    def count(document: dict[str, Any]) -> None:
        document["counts"]["cubes"] += 1

    return rebuild(data, replace={"cubes.jsonl": member(data, "cubes.jsonl") + line}, manifest=count)


def _unknown_version(data: bytes) -> bytes:
    return rebuild(data, manifest=lambda document: document.update(format_version=99))


def _missing_member(data: bytes) -> bytes:
    return rebuild(data, replace={"history.jsonl": None}, checksums=False)


def _unlisted_member(data: bytes) -> bytes:
    return rebuild(data, replace={"extra.jsonl": b"{}\n"})


def _wrong_count(data: bytes) -> bytes:
    return rebuild(data, manifest=lambda document: document["counts"].update(history=1))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("corrupt", "complaint"),
    [
        (_flip_a_byte, "checksum mismatch for cubes.jsonl"),
        (_bad_json_line, "cubes.jsonl line 6: not valid JSON"),
        (_not_a_cube, "cubes.jsonl line 6: not a valid MemCube: mood: Extra inputs are not permitted"),
        (_unknown_version, "unknown memcube-bundle format_version 99"),
        (_missing_member, "member history.jsonl is listed in manifest.json but missing from the archive"),
        (_unlisted_member, "member extra.jsonl is not listed"),
        (_wrong_count, "the manifest counts 5 and 1"),
        (_truncated, "not a readable zip archive"),
    ],
)
def test_a_corrupt_or_tampered_bundle_is_refused_and_changes_nothing(
    proxy: Proxy,
    backend: Backend,
    start_proxy: Callable[..., Proxy],
    tmp_path: Path,
    corrupt: Callable[[bytes], bytes],
    complaint: str,
) -> None:
    with proxy.http() as http:
        build_space(http)
        bundle = export(http)
    other = fresh(start_proxy, backend, tmp_path / "other")
    with other.http() as http:
        response = upload(http, corrupt(bundle))
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_bundle"
        assert complaint in error["message"]
        assert everything(http) == []
        assert (
            http.post("/v1/memories/search", json={"user": "alice", "query": "Where do I live?"}).json()["results"]
            == []
        )
        assert upload(http, bundle).json()["imported"] == 5  # the intact bundle still goes in


def test_times_without_offset_are_refused() -> None:
    cube = {"id": "01A", "space": "agent:support", "content": "x", "created_at": "2024-01-01T00:00:00"}
    data = handwritten([cube], [], {})
    with pytest.raises(BundleError, match=r"cubes\.jsonl line 1: .*created_at.*has no UTC offset"):
        read_bundle(data)


def test_an_empty_or_unrecognised_upload_is_refused(proxy: Proxy) -> None:
    with proxy.http() as http:
        assert "body is empty" in upload(http, b"").json()["error"]["message"]
        assert "neither a zip archive nor JSON" in upload(http, b"hello").json()["error"]["message"]
        wrong = upload(http, b"{}", on_conflict="merge")
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "on_conflict"


# -- conflicts and re-homing ------------------------------------------------------------------------


def test_skip_and_overwrite_on_the_same_proxy(proxy: Proxy) -> None:
    with proxy.http() as http:
        ids = build_space(http)
        bundle = export(http)
        before = everything(http)
        history = histories(http, before)
        skipped = upload(http, bundle).json()
        assert (skipped["imported"], skipped["skipped"], skipped["history"]) == (0, 5, 0)
        assert everything(http) == before

        http.patch(f"/v1/memories/{ids['diet']}", json={"content": "I'm vegan."})
        replaced = upload(http, bundle, on_conflict="overwrite").json()
        assert (replaced["imported"], replaced["overwritten"]) == (0, 5)
        assert replaced["history"] == 1  # the cube that changed gets an IMPORT event; nothing is duplicated
        diet = http.get(f"/v1/memories/{ids['diet']}").json()
        assert (diet["content"], diet["version"], diet["state"]) == ("I'm vegetarian.", 1, "active")
        events = [h["event"] for h in http.get(f"/v1/memories/{ids['diet']}/history").json()["data"]]
        assert events[0] == "ADD" and events[-1] == "IMPORT" and events.count("ADD") == 1
        others = {k: v for k, v in histories(http, before).items() if k != ids["diet"]}
        assert others == {k: v for k, v in history.items() if k != ids["diet"]}


def test_new_ids_copy_a_space_and_keep_links_consistent(proxy: Proxy) -> None:
    with proxy.http() as http:
        ids = build_space(http)
        bundle = export(http)
        original = everything(http)
        report = upload(http, bundle, space="user:copy", on_conflict="new-ids").json()
        assert (report["space"], report["imported"], report["vectors_reused"]) == ("user:copy", 5, 3)
        copies = everything(http, "user:copy")
        assert everything(http) == original
        assert not {c["id"] for c in copies} & {c["id"] for c in original}
        assert {c["space"] for c in copies} == {"user:copy"}
        by_content = {c["content"]: c for c in copies}
        lisbon, porto = by_content["I live in Lisbon."], by_content["I moved to Porto."]
        assert lisbon["superseded_by"] == porto["id"] and porto["supersedes"] == lisbon["id"]
        snapshots = http.get(f"/v1/memories/{lisbon['id']}/history").json()["data"]
        assert [s["memory"]["id"] for s in snapshots] == [lisbon["id"], lisbon["id"]]
        assert snapshots[-1]["memory"]["superseded_by"] == porto["id"]
        assert [c["content"] for c in copies] == [c["content"] for c in original]  # order kept
        found = http.post("/v1/memories/search", json={"user": "copy", "query": "Where do I live?"}).json()
        porto_hits = [r for r in found["results"] if "Porto" in r["text"]]
        assert [r["id"] for r in porto_hits] == [porto["id"]] and porto["id"] != ids["porto"]


def test_an_import_never_takes_or_reveals_a_cube_of_another_space(proxy: Proxy) -> None:
    """Ids of another space get fresh ids, whatever on_conflict says: no error naming that space
    and no skip count tells an importer which ids exist elsewhere."""
    with proxy.http() as http:
        build_space(http)
        original = everything(http)
        bundle = export(http)
        for on_conflict in ("overwrite", "skip"):
            report = upload(http, bundle, space=f"user:mallory-{on_conflict}", on_conflict=on_conflict).json()
            assert (report["imported"], report["skipped"], report["overwritten"]) == (5, 0, 0)
            copies = everything(http, f"user:mallory-{on_conflict}")
            assert len(copies) == 5 and not {c["id"] for c in copies} & {c["id"] for c in original}
        assert everything(http) == original
        assert report["skipped_because"] == {}
        again = upload(http, export(http, "user:mallory-skip"), space="user:mallory-skip").json()
        assert (again["imported"], again["skipped"]) == (0, 5)  # the same bundle again: the reply says why
        assert again["skipped_because"] == {"exists": 5} and "on_conflict=overwrite" in again["reasons"]["exists"]
        assert [item["reason"] for item in again["skipped_items"]] == ["exists"] * 5
        assert [item["index"] for item in again["skipped_items"]] == list(range(5))


def test_space_rehomes_into_another_proxy(
    proxy: Proxy, backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path
) -> None:
    with proxy.http() as http:
        build_space(http)
        bundle = export(http)
        found = searches(http)
    other = fresh(start_proxy, backend, tmp_path / "other")
    with other.http() as http:
        assert upload(http, bundle, space="user:bob").json()["imported"] == 5
        assert everything(http) == []
        assert {c["space"] for c in everything(http, "user:bob")} == {"user:bob"}
        assert searches(http, "bob") == found


def test_imports_have_their_own_body_limit(backend: Backend, start_proxy: Callable[..., Proxy], tmp_path: Path) -> None:
    small = fresh(start_proxy, backend, tmp_path / "data", general_settings={"max_request_size_mb": 0.002})
    with small.http() as http:
        for n in range(12):
            assert say(http, f"I visited city number {n} in {2000 + n}.", "2020-01-01T00:00:00Z")["id"]
        bundle = export(http)
        assert len(bundle) > 0.002 * 1024 * 1024
        facts = {"user": "alice", "facts": ["x" * 4000], "sync": True}
        assert http.post("/v1/memories", json=facts).status_code == 413
        assert upload(http, bundle, space="user:copy", on_conflict="new-ids").status_code == 200
