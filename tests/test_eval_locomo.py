"""The LOCOMO harness: data loading, metrics, baselines, the run through real HTTP, QA, the CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from memcubes.embedder import Embedder
from proxy.cli import main
from proxy.eval import EvalError, evaluate_retrieval, load_samples, local_proxy, qa_items, run_qa
from proxy.eval.baselines import BM25, rank_all, reciprocal_rank_fusion, tokenize
from proxy.eval.locomo import canonical_ids, parse_session_time
from proxy.eval.metrics import Item, pack, score
from proxy.eval.qa import ANSWER_PROMPT, parse_verdict
from tests.conftest import Backend, proxy_settings

MINI = Path(__file__).parent / "fixtures" / "locomo-mini.json"
DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo-dev.json"


# -- data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "ids"),
    [
        ("D1:3", ["D1:3"]),
        ("D1: 3", ["D1:3"]),
        (" d01:03 ", ["D1:3"]),
        ("D8:6; D9:17", ["D8:6", "D9:17"]),
        ("D2:1,D2:2 D2:1", ["D2:1", "D2:2"]),
        ("D:11:26", ["D11:26"]),
        ("turn-7", ["turn-7"]),
        ("  ", []),
    ],
)
def test_evidence_ids_are_normalised(raw: str, ids: list[str]) -> None:
    assert canonical_ids(raw) == ids


def test_session_times_parse_to_utc() -> None:
    assert parse_session_time("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert parse_session_time("12:48 am on 1 February, 2024") == datetime(2024, 2, 1, 0, 48, tzinfo=UTC)
    assert parse_session_time("12:05 pm on 3 Sept, 2022") == datetime(2022, 9, 3, 12, 5, tzinfo=UTC)
    with pytest.raises(EvalError, match="unreadable session time"):
        parse_session_time("yesterday")


def test_samples_load_as_messages_questions_and_evidence() -> None:
    first, second = load_samples(MINI)
    assert (first.sample_id, first.user, len(first.turns), len(second.turns)) == ("mini-1", "locomo-mini-1", 10, 2)
    photo = first.turns[4]
    assert photo.message() == {
        "role": "user",
        "content": "Look at this! [shares a photo: a photo of a lighthouse on a rocky coast]",
        "name": "Ana",
        "id": "D1:5",
        "created_at": "2023-05-08T13:56:04+00:00",
    }
    assert (
        photo.rendered == "[2023-05-08] Ana: Look at this! [shares a photo: a photo of a lighthouse on a rocky coast]"
    )
    assert first.turns[6].created_at == datetime(2024, 2, 1, 0, 48, tzinfo=UTC)
    assert [len(session) for session in first.sessions()] == [6, 4]
    # Category 5 is left out; quirky ids are normalised, unknown ones skipped and counted.
    assert [(q.category, q.evidence, q.unknown_evidence) for q in first.questions] == [
        (4, ("D1:1",), 0),
        (1, ("D1:4", "D2:1"), 0),
        (2, ("D2:1",), 0),
        (3, ("D1:5",), 1),
        (3, (), 0),
    ]
    assert first.questions[-1].answer == "2024" and len(first.scored) == 4
    assert load_samples(MINI, captions=False)[0].turns[4].text == "Look at this!"
    sliced = load_samples(MINI, sample_ids=["mini-1"], max_sessions=1, max_questions=2)
    assert [len(s.turns) for s in sliced] == [6]
    assert [(q.evidence, q.unknown_evidence) for q in sliced[0].questions] == [(("D1:1",), 0), (("D1:4",), 1)]
    with pytest.raises(EvalError, match=r"unknown sample nope; .* has mini-1, mini-2"):
        load_samples(MINI, sample_ids=["nope"])


@pytest.mark.skipif(not DEV.exists(), reason="the LOCOMO dev split is not next to the repository")
def test_the_dev_split_loads_every_turn_and_question() -> None:
    samples = load_samples(DEV)
    assert [(s.sample_id, len(s.turns), len(s.questions), len(s.scored)) for s in samples] == [
        ("conv-26", 419, 152, 150),
        ("conv-30", 369, 81, 81),
        ("conv-41", 663, 152, 152),
    ]
    painted = next(q for q in samples[0].questions if q.text == "What did Melanie paint recently?")
    assert painted.evidence == ("D8:6", "D9:17")
    assert sum(q.unknown_evidence for s in samples for q in s.questions) == 0


# -- metrics --------------------------------------------------------------------------------------


def test_packing_skips_what_overflows_and_keeps_rank_order() -> None:
    items = [Item(("a",), 400), Item(("b",), 700), Item(("c",), 300), Item(("d",), 200), Item(("e",), 50)]
    assert [i.sources for i in pack(items, budget=1000, top_k=50)] == [("a",), ("c",), ("d",), ("e",)]
    assert [i.sources for i in pack(items, budget=1000, top_k=2)] == [("a",), ("c",)]
    assert pack(items, budget=0, top_k=50) == []
    assert [i.sources for i in pack([Item(("x",), 10), Item(("y",), 0)], budget=10, top_k=5)] == [("x",)]


def test_recall_counts_evidence_among_sources_within_budget_and_at_k() -> None:
    ranked = [Item(("D1:7",), 30), Item(("D1:2", "D1:3"), 60), Item(("D2:1",), 30)] + [
        Item((f"D3:{i}",), 1) for i in range(20)
    ]
    within = pack(ranked, budget=70, top_k=50)
    outcome = score(
        "s", "q?", category=1, evidence=("D1:3", "D2:1", "D4:4"), within=within, ranked=ranked, latency_ms=2.0
    )
    assert [item.sources for item in within[:2]] == [("D1:7",), ("D2:1",)]
    assert outcome.missed == ("D1:3", "D4:4")
    assert outcome.recall == pytest.approx(1 / 3)
    assert outcome.recall_at == {5: pytest.approx(2 / 3), 10: pytest.approx(2 / 3), 20: pytest.approx(2 / 3)}
    assert outcome.tokens == sum(item.tokens for item in within) <= 70


# -- baselines ------------------------------------------------------------------------------------

DOCS = [
    "Ana: I adopted a greyhound called Pistachio.",
    "Ben: I moved to the city of Lisbon for a job at the bakery.",
    "Ana: the the the the the the dog.",
    "Ben: The cello recital is next Saturday.",
]


def test_bm25_ranks_the_exact_keyword_turn_first() -> None:
    bm25 = BM25(DOCS)
    assert tokenize("Ben's Lisbon-job!") == ["ben", "s", "lisbon", "job"]
    assert bm25.rank("Where is the bakery in LISBON?")[0] == 1
    assert bm25.rank("Pistachio") == [0]
    assert bm25.rank("quantum chromodynamics") == []
    assert bm25.idf("pistachio") > bm25.idf("the") > 0
    # A rare term outweighs a frequent one however often the frequent one repeats.
    assert bm25.rank("the Saturday")[0] == 3


def test_reciprocal_rank_fusion_adds_reciprocal_ranks() -> None:
    assert reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60) == [1, 3, 2]
    assert reciprocal_rank_fusion([[0], [1]], k=60) == [0, 1]  # a tie keeps first appearance


def test_dense_and_fused_baselines_rank_every_turn(embedder: Embedder) -> None:
    rankings = asyncio.run(rank_all(DOCS, ["Which pet does Ana have?", "cello"], embedder=embedder))
    assert set(rankings) == {"bm25", "dense", "rrf"}
    pet = rankings["dense"][0].order
    assert sorted(pet) == [0, 1, 2, 3] and pet[0] in (0, 2)
    assert rankings["bm25"][1].order == [3] and rankings["rrf"][1].order[0] == 3
    assert all(r.seconds >= 0 for rs in rankings.values() for r in rs)


# -- the run, through real HTTP -------------------------------------------------------------------


def test_retrieval_and_qa_through_a_proxy_of_its_own(backend: Backend, embedder: Embedder, tmp_path: Path) -> None:
    samples = load_samples(MINI, sample_ids=["mini-1"])
    settings = proxy_settings(backend.url, tmp_path / "ignored")
    budget = 40
    with local_proxy(settings, budget=budget, top_k=50, embedder=embedder) as url:
        report = evaluate_retrieval(samples, url=url, embedder=embedder, budget=budget, top_k=50)
        backend.queue(
            {"text": "A greyhound"},
            {"text": '{"reasoning": "same breed", "label": "CORRECT"}'},
            {"text": "Cello; Lisbon"},
            {"text": "Both facts match. CORRECT"},
            {"text": "May 2023"},
            {"text": '```json\n{"label": "WRONG"}\n```'},
            {"text": "A lighthouse"},
            {"text": "The answer is correct."},
            {"text": "Probably"},
            {"text": "CORRECT or WRONG, hard to say"},
        )
        qa = run_qa(qa_items(samples), url=url, model="fake", judge="fake", concurrency=1)
        stored = httpx.get(f"{url}/v1/memories", params={"user": "locomo-mini-1", "limit": 100}).json()["data"]
        searched = httpx.post(
            f"{url}/v1/memories/search", json={"user": "locomo-mini-1", "query": samples[0].questions[0].text}
        ).json()["results"]

    assert report.events["memproxy-raw"] == {"ADD": 10}  # raw: one episode per turn
    assert len(stored) == report.events["memproxy"]["ADD"]  # QA read memories, learnt nothing
    assert report.counts() == {
        "samples": 1,
        "turns": 10,
        "questions": 5,
        "scored": 4,
        "unscored": 1,
        "skipped_evidence": 1,
    }
    assert report.token_mismatches == 0 and report.over_budget == 0
    assert list(report.outcomes) == ["memproxy", "memproxy-raw", "bm25", "dense", "rrf"]
    for outcomes in report.outcomes.values():
        assert [o.question for o in outcomes] == [q.text for q in samples[0].scored]
        assert all(0 < o.tokens <= budget for o in outcomes)
    lisbon = {name: outcomes[2] for name, outcomes in report.outcomes.items()}
    assert lisbon["memproxy"].recall == lisbon["bm25"].recall == 1.0
    assert all(o.recall_at[20] == 1.0 for o in report.outcomes["dense"])
    summary = report.summary()
    assert summary["memproxy"]["all"]["questions"] == 4 and summary["memproxy"]["4"]["questions"] == 1
    assert summary["bm25"]["1"]["recall_budget"] == report.outcomes["bm25"][1].recall
    table = report.table()
    assert "4 questions of categories 1-4 (1 more without evidence, 1 unknown evidence ids skipped)" in table
    assert [line.split()[0] for line in table.splitlines()[2:8]] == [
        "system",
        "memproxy",
        "memproxy-raw",
        "bm25",
        "dense",
        "rrf",
    ]
    assert json.loads(json.dumps(report.to_json()))["per_question"][2]["memproxy"]["missed"] == []

    answer, judge = backend.received[0]["body"], backend.received[1]["body"]
    assert answer["user"] == "locomo-mini-1" and answer["messages"][0]["content"] == ANSWER_PROMPT
    prompt = answer["messages"][1]["content"]
    # What chat injected for the question is what search returns for it (the proxy's budget is 40).
    assert "<memories>" in prompt and searched and all(result["text"] in prompt for result in searched)
    assert prompt.endswith("What kind of dog did Ana adopt?")
    assert "<memories>" not in json.dumps(judge)
    assert "Gold answer: a greyhound\nGenerated answer: A greyhound" in judge["messages"][0]["content"]
    assert [o.verdict for o in qa.outcomes] == [True, True, False, True, None]
    result = qa.summary()
    assert result["all"]["accuracy"] == pytest.approx(0.6) and result["all"]["unparsed"] == 1
    assert [result[c]["accuracy"] for c in "1234"] == [1.0, 0.0, 0.5, 1.0]
    assert all(o.memory_status == "ok" and 0 < o.memory_tokens <= budget for o in qa.outcomes)
    assert "J all" in qa.table() and "Unparsed judge replies (counted WRONG): 1" in qa.table()


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('{"label": "CORRECT"}', True),
        ('Reasoning first. {"reasoning": "it is wrong", "label": "WRONG"}', False),
        ('{"label": "incorrect"}', False),
        ("CORRECT", True),
        ("The answer names another city, so it is WRONG.", False),
        ("INCORRECT", False),
        ("the answer is correct", True),
        ("CORRECT or WRONG", None),
        ("I cannot tell.", None),
        ('{"label": "maybe"}', None),
    ],
)
def test_judge_verdicts_parse(reply: str, verdict: bool | None) -> None:
    assert parse_verdict(reply) is verdict


# -- the command ----------------------------------------------------------------------------------


def test_cli_prints_the_table_and_writes_every_number(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "eval.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        f"    litellm_params: {{model: openai/fake, api_base: '{backend.url}/v1', api_key: x}}\n"
    )
    backend.queue({"text": "Tomatoes"}, {"text": '{"label": "CORRECT"}'})
    out = tmp_path / "report.json"
    args = ["eval", "locomo", "--data", str(MINI), "--samples", "mini-2", "--budget", "300", "--json", str(out)]
    code = main([*args, "--config", str(config), "--qa", "--model", "fake", "--judge", "fake"])
    printed = capsys.readouterr().out
    assert code == 0
    retrieval, qa = printed.split("LOCOMO LLM-judged QA")
    assert "LOCOMO evidence recall within 300 cl100k tokens" in retrieval and "J all" in qa
    rows = {line.split()[0]: line.split()[1:] for line in retrieval.splitlines() if line.split()[:1]}
    assert rows["memproxy"][:2] == ["1.000", "-"] and rows["bm25"][0] == "1.000"
    data = json.loads(out.read_text())
    assert data["retrieval"]["systems"]["memproxy"]["4"]["recall_budget"] == 1.0
    assert data["retrieval"]["budget"] == 300 and data["retrieval"]["sample_ids"] == ["mini-2"]
    assert data["qa"]["summary"]["all"]["accuracy"] == 1.0
    assert "Cleo: I planted tomatoes on my balcony." in backend.received[0]["body"]["messages"][1]["content"]


def test_cli_refuses_bad_arguments_before_loading_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "locomo", "--data", str(MINI), "--qa", "--model", "m"]) == 2
    assert "--qa needs --model and --judge" in capsys.readouterr().err
    assert main(["eval", "locomo", "--data", str(MINI), "--samples", "nope"]) == 2
    assert "unknown sample nope" in capsys.readouterr().err
    assert main(["eval", "locomo", "--data", str(MINI.with_name("missing.json"))]) == 2
    assert "cannot read LOCOMO data" in capsys.readouterr().err
