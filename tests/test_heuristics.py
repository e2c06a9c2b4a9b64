"""Rule tables for the offline distiller: what is kept, what is keyed, and what must never be keyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from memcubes.heuristics import FactKey, extract_facts, fact_key, negation_of, normalize

# --- extract_facts: kept statements ------------------------------------------------------------------

KEEP = [
    ("I live in Lisbon", ["I live in Lisbon."]),
    ("I'm a nurse", ["I'm a nurse."]),
    ("I work at Google.", ["I work at Google."]),
    ("I have two kids", ["I have two kids."]),
    ("I'm allergic to peanuts!", ["I'm allergic to peanuts."]),
    ("I love hiking", ["I love hiking."]),
    ("I hate cilantro!!!", ["I hate cilantro."]),
    ("I prefer tea over coffee.", ["I prefer tea over coffee."]),
    ("My favorite band is Muse", ["My favorite band is Muse."]),
    ("I'm going to Japan next month", ["I'm going to Japan next month."]),
    ("I plan to run a marathon.", ["I plan to run a marathon."]),
    ("I will start my new job on Monday.", ["I will start my new job on Monday."]),
    ("My sister Anna lives in Berlin", ["My sister Anna lives in Berlin."]),
    ("my husband is a chef", ["My husband is a chef."]),
    ("I moved to Porto in 2021", ["I moved to Porto in 2021."]),
    ("Yesterday I adopted a cat!", ["Yesterday I adopted a cat."]),
    ("My birthday is on 12 March.", ["My birthday is on 12 March."]),
    ("I usually run in the morning.", ["I usually run in the morning."]),
    ("I'm 34", ["I'm 34."]),
    ("I'm vegetarian", ["I'm vegetarian."]),
    ("I'm diabetic", ["I'm diabetic."]),
    ("Call me Alex", ["Call me Alex."]),
    ("I don't like cilantro", ["I don't like cilantro."]),
    ("Last summer, my wife and I went to Japan.", ["Last summer, my wife and I went to Japan."]),
    ("It's my birthday tomorrow!", ["It's my birthday tomorrow."]),
    ("i live in lisbon", ["I live in lisbon."]),
    ("When I was a kid I lived in Rome.", ["When I was a kid I lived in Rome."]),
    ("I love hiking and plan to climb Kilimanjaro.", ["I love hiking and plan to climb Kilimanjaro."]),
    ("I'm learning Japanese, and I want to visit Kyoto.", ["I'm learning Japanese, and I want to visit Kyoto."]),
    # retractions are kept: the reconciler needs them for DELETE/UPDATE
    ("I no longer eat meat", ["I no longer eat meat."]),
    ("I don't live in Lisbon anymore.", ["I don't live in Lisbon anymore."]),
    ("I quit my job at Google", ["I quit my job at Google."]),
]

MIXED = [
    # fillers, greetings and trailing chatter are removed around the fact
    ("Well, I live in Lisbon", ["I live in Lisbon."]),
    ("Oh, and my wife is a teacher.", ["My wife is a teacher."]),
    ("Btw I'm allergic to shellfish", ["I'm allergic to shellfish."]),
    ("So, I'm a nurse lol", ["I'm a nurse."]),
    ("Actually, I don't live in Lisbon anymore.", ["I don't live in Lisbon anymore."]),
    ("i work at google btw", ["I work at google."]),
    ("Hi! I'm Sam and I work at Google. Can you help me write a cover letter?", ["I'm Sam and I work at Google."]),
    ("Thanks! I moved to Berlin last week :)", ["I moved to Berlin last week."]),
    # a question or request clause is cut off, the statement before it stays
    ("I'm vegetarian, what should I cook tonight?", ["I'm vegetarian."]),
    ("i live in lisbon, any tips for restaurants?", ["I live in lisbon."]),
    ("My favorite band is Muse, have you heard of them?", ["My favorite band is Muse."]),
    ("I'm going to Japan next month, what should I pack?", ["I'm going to Japan next month."]),
    ("I'm vegan, right?", ["I'm vegan."]),
    ("I'm a nurse, please write me a poem about hospitals.", ["I'm a nurse."]),
    ("I love hiking, write a poem about mountains.", ["I love hiking."]),
    ("I just moved to Berlin so can you recommend some cafes?", ["I just moved to Berlin."]),
    ("Since I'm vegan, what can I eat at a steakhouse?", ["I'm vegan."]),
    ("Can you recommend a book? I love sci-fi.", ["I love sci-fi."]),
    ("I'm planning to run a marathon. Any tips?", ["I'm planning to run a marathon."]),
    # "remember that ..." is a request whose content is the fact
    ("Please remember that I'm allergic to peanuts.", ["I'm allergic to peanuts."]),
    ("I'd like you to remember that I'm lactose intolerant.", ["I'm lactose intolerant."]),
    ("I'm allergic to peanuts, please remember that.", ["I'm allergic to peanuts."]),
    ("Do me a favor and remember I'm vegan.", ["I'm vegan."]),
    # several sentences, bullets and numbered lists
    ("I live in Lisbon. I have two cats! I love jazz.", ["I live in Lisbon.", "I have two cats.", "I love jazz."]),
    (
        "About me:\n- I live in Lisbon\n- I have two cats\n* I love jazz",
        ["I live in Lisbon.", "I have two cats.", "I love jazz."],
    ),
    (
        "1. I live in Lisbon\n2. I work at Google\n3) I like cats",
        ["I live in Lisbon.", "I work at Google.", "I like cats."],
    ),
    ("• I'm allergic to shellfish\n• I prefer window seats", ["I'm allergic to shellfish.", "I prefer window seats."]),
    ("I live in Lisbon; my sister lives in Porto.", ["I live in Lisbon; my sister lives in Porto."]),
    # no split on abbreviations, decimals or times
    ("I see Dr. Smith every Tuesday. I have a bad back.", ["I see Dr. Smith every Tuesday.", "I have a bad back."]),
    (
        "I work until 5 p.m. on weekdays. I ran 3.5 km this morning!",
        ["I work until 5 p.m. on weekdays.", "I ran 3.5 km this morning."],
    ),
    ("I use tools e.g. Vim and Git every day.", ["I use tools e.g. Vim and Git every day."]),
    ("I moved to the U.S. in 2020 and I love it.", ["I moved to the U.S. in 2020 and I love it."]),
    # duplicates inside one message collapse, order is kept
    ("I'm a nurse. I'm a nurse! I live in Porto. i'm a nurse", ["I'm a nurse.", "I live in Porto."]),
    # code blocks and material handed over for a task are not the speaker talking
    ("```python\nprint('I live in Lisbon')\n```\nI'm a Python developer.", ["I'm a Python developer."]),
    ("Translate the following into French:\nI live in Lisbon and I love it.", []),
    # stray punctuation, emoji and invisible characters do not leak into the statement
    (",,,, I live in Lisbon ,,,", ["I live in Lisbon."]),
    ("I moved to Porto 🎉🎉 :)", ["I moved to Porto."]),
    ("I am a nurse\u200b.", ["I am a nurse."]),
    ("Ｉ ｌｉｖｅ ｉｎ Ｌｉｓｂｏｎ", ["I live in Lisbon."]),
]

DROP = [
    "hi",
    "Hello there!",
    "thanks!",
    "Thank you so much for your help!",
    "ok cool",
    "haha",
    "sounds good",
    "lol that's funny",
    "yes please",
    "k",
    "hmm ok",
    "no",
    "Good morning!",
    "I think so",
    "I see",
    "I know",
    "I guess",
    "I'm fine",
    "I'm good, thanks",
    "i'm ok",
    "I'm not sure",
    "I appreciate it",
    "I love it!",
    "I hope you're well",
    "I think you're right",
    "I'm tired",
    "What's the weather?",
    "what's the weather",
    "can you help me?",
    "Do you know where I can buy shoes?",
    "Why do I always feel tired?",
    "Is it true that I can eat 3.5 kg of pasta?",
    "I live in Lisbon?",
    "What do you think about my plan to move to Berlin?",
    "write me a poem",
    "Please summarize this.",
    "translate the following",
    "Tell me a joke",
    "Let's talk about movies",
    "Please write me a poem about my dog Rex.",
    "I need help with my resume",
    "I was wondering if you could help",
    "I wonder if it will rain",
    "The sky is blue.",
    "Python is a programming language.",
    "That's my favorite.",
    "You are great",
    "If I were rich, I would buy a boat.",
    "I'd buy a house if I had the money.",
    "I wish I could travel more.",
    "Imagine I lived on Mars.",
    "I'm in a hurry, can you be quick?",
    "Wow, I didn't know that!",
    "Sorry, I meant Porto, not Lisbon.",
    "Remind me to call my mom tomorrow.",
    "My name is",
    "I live in",
    "",
    "   ",
    "!!!",
    "ok.",
]


@pytest.mark.parametrize(("message", "expected"), KEEP + MIXED)
def test_extract_facts_keeps_statements_about_the_speaker(message: str, expected: list[str]) -> None:
    assert extract_facts(message) == expected


@pytest.mark.parametrize("message", DROP)
def test_extract_facts_drops_chit_chat_questions_requests_and_generic_text(message: str) -> None:
    assert extract_facts(message) == []


def test_extract_facts_keeps_only_the_facts_of_a_realistic_message() -> None:
    message = (
        "Hey! Hope you're doing well. So, I just moved to Porto last month and I'm starting a new job at "
        "Farfetch on Monday. My wife is a teacher. Could you suggest some good restaurants near Ribeira? "
        "Oh btw, I'm vegetarian. Thanks a lot!"
    )
    assert extract_facts(message) == [
        "I just moved to Porto last month and I'm starting a new job at Farfetch on Monday.",
        "My wife is a teacher.",
        "I'm vegetarian.",
    ]


# --- fact_key --------------------------------------------------------------------------------------------

FACT_KEYS = [
    # residence and origin
    ("I live in Lisbon", ("user", "residence", "lisbon")),
    ("I'm living in Madrid.", ("user", "residence", "madrid")),
    ("I am living in Madrid", ("user", "residence", "madrid")),
    ("I've been living in New York for 3 years", ("user", "residence", "new york")),
    ("I moved to Porto last year", ("user", "residence", "porto")),
    ("I moved to Porto in 2021", ("user", "residence", "porto")),
    ("I moved to Porto 2 years ago", ("user", "residence", "porto")),
    ("I just relocated to Berlin", ("user", "residence", "berlin")),
    ("I'm based in London", ("user", "residence", "london")),
    ("I live in Lisbon since 2019", ("user", "residence", "lisbon")),
    ("I live in Lisbon with my wife", ("user", "residence", "lisbon")),
    ("I live in New York and I love it", ("user", "residence", "new york")),
    ("My home is in Lisbon", ("user", "residence", "lisbon")),
    ("Last year I moved to the US", ("user", "residence", "us")),
    ("We moved to Porto in 2020", ("user", "residence", "porto")),
    ("I'm from Brazil", ("user", "origin", "brazil")),
    ("I am originally from Brazil", ("user", "origin", "brazil")),
    ("I was born in Lyon", ("user", "origin", "lyon")),
    ("I'm from the U.K.", ("user", "origin", "uk")),
    # employer and job
    ("I work at Google", ("user", "employer", "google")),
    ("I work for Google as an engineer", ("user", "employer", "google")),
    ("I work at Google as an engineer", ("user", "employer", "google")),
    ("I'm working at Spotify", ("user", "employer", "spotify")),
    ("I got a job at Spotify", ("user", "employer", "spotify")),
    ("I got a new job at Spotify!", ("user", "employer", "spotify")),
    ("I started working at Meta last week", ("user", "employer", "meta")),
    ("I joined Google", ("user", "employer", "google")),
    ("I work at Ernst and Young", ("user", "employer", "ernst and young")),
    ("I work at AT&T", ("user", "employer", "at&t")),
    ("I work for Google, Inc.", ("user", "employer", "google")),
    ("I'm a nurse", ("user", "job", "nurse")),
    ("I'm an engineer", ("user", "job", "engineer")),
    ("I'm a software engineer", ("user", "job", "software engineer")),
    ("I'm a nurse at St. Mary's", ("user", "job", "nurse")),
    ("I work as a data scientist", ("user", "job", "data scientist")),
    ("I'm a psychologist", ("user", "job", "psychologist")),
    ("I became a teacher in 2019", ("user", "job", "teacher")),
    # age
    ("I am 34", ("user", "age", "34")),
    ("I'm 34 years old", ("user", "age", "34")),
    ("I'm 34 and I live in Lisbon", ("user", "age", "34")),
    ("I turned 35", ("user", "age", "35")),
    ("I just turned 35 last week", ("user", "age", "35")),
    # name
    ("My name is Sam", ("user", "name", "sam")),
    ("My name's Sam and I live in Lisbon", ("user", "name", "sam")),
    ("Call me Alex", ("user", "name", "alex")),
    ("Call me Alex, please", ("user", "name", "alex")),
    ("People call me Jo", ("user", "name", "jo")),
    # favourites
    ("My favorite band is Muse", ("user", "favorite band", "muse")),
    ("My favourite colour is blue", ("user", "favorite color", "blue")),
    ("My favorite food is fish and chips", ("user", "favorite food", "fish and chips")),
    ("Muse is my favorite band", ("user", "favorite band", "muse")),
    # diet
    ("I'm vegetarian", ("user", "diet", "vegetarian")),
    ("I'm a vegetarian", ("user", "diet", "vegetarian")),
    ("I am vegan now", ("user", "diet", "vegan")),
    ("I'm pescetarian", ("user", "diet", "pescatarian")),
    ("I went vegan last year", ("user", "diet", "vegan")),
    ("I follow a keto diet", ("user", "diet", "keto")),
    ("I eat meat", ("user", "diet", "omnivore")),
    ("I eat meat again", ("user", "diet", "omnivore")),
    # relationships
    ("My sister's name is Anna", ("sister", "name", "anna")),
    ("My sister is called Anna", ("sister", "name", "anna")),
    ("My dog is named Rex", ("dog", "name", "rex")),
    ("My dog's name is Rex", ("dog", "name", "rex")),
    ("I have a dog named Rex", ("dog", "name", "rex")),
    ("We've got a cat called Luna", ("cat", "name", "luna")),
    ("My wife works at Amazon", ("wife", "employer", "amazon")),
    ("My brother lives in Paris", ("brother", "residence", "paris")),
    ("My sister Anna lives in Berlin", ("sister", "residence", "berlin")),
    ("My older sister moved to Berlin", ("older sister", "residence", "berlin")),
    ("My mum lives in Leeds", ("mother", "residence", "leeds")),
    ("My husband is a chef", ("husband", "job", "chef")),
    ("My son is 5 years old", ("son", "age", "5")),
    # relationship status
    ("I'm married", ("user", "relationship status", "married")),
    ("I'm single", ("user", "relationship status", "single")),
    ("I'm divorced", ("user", "relationship status", "divorced")),
    ("I got engaged last week", ("user", "relationship status", "engaged")),
    ("I'm married to Anna", ("user", "relationship status", "married")),
    ("I'm married with two kids", ("user", "relationship status", "married")),
    ("I'm in a relationship", ("user", "relationship status", "in a relationship")),
    # fillers, time openers, case and punctuation do not change the key
    ("Well, I live in Lisbon!", ("user", "residence", "lisbon")),
    ("i LIVE in LISBON.", ("user", "residence", "lisbon")),
    ("Btw I work at Google lol", ("user", "employer", "google")),
    ("In 2021, I moved to Porto", ("user", "residence", "porto")),
    ("I’m a nurse", ("user", "job", "nurse")),
]

NOT_FACT_KEYS = [
    "I'm a big fan of jazz",
    "I live for the weekends",
    "I'm in a hurry",
    "I'm a huge coffee drinker",
    "I'm a quick learner",
    "I'm a morning person",
    "I'm a former nurse",
    "I'm a retired teacher",
    "I'm 34 weeks pregnant",
    "I'm 5 minutes away",
    "I'm engaged in a new project",
    "I'm single-handedly doing it",
    "I joined a gym",
    "I work from home",
    "I work at home",
    "I work at night",
    "I work for myself",
    "I live in a small flat",
    "I live in fear",
    "I live in the city",
    "I moved to a new apartment",
    "I'm moving to Berlin next week",
    "I lived in Rome as a kid",
    "My favorite band was Muse",
    "That is my favorite",
    "Call me back later",
    "Call me crazy, but I like it",
    "My dog walker lives in Rome",
    "my sister anna lives in berlin",
    "The sky is blue",
    "I love hiking",
    "I don't like cilantro",
    "I no longer live in Lisbon",
    "I'm not vegetarian",
    "I quit my job",
    "If I lived in Lisbon",
    "I'd be 34",
    "",
    "hello",
]


@pytest.mark.parametrize(("statement", "expected"), FACT_KEYS)
def test_fact_key_recognises_rule(statement: str, expected: tuple[str, str, str]) -> None:
    assert fact_key(statement) == FactKey(*expected)


@pytest.mark.parametrize("statement", NOT_FACT_KEYS)
def test_fact_key_returns_none_when_unsure(statement: str) -> None:
    assert fact_key(statement) is None


# --- negation_of -------------------------------------------------------------------------------------------

RETRACTIONS = [
    ("I no longer live in Lisbon", ("user", "residence", "lisbon")),
    ("I don't live in Lisbon anymore", ("user", "residence", "lisbon")),
    ("I do not live in Lisbon any more.", ("user", "residence", "lisbon")),
    ("I'm no longer living in Lisbon", ("user", "residence", "lisbon")),
    ("I moved out of Lisbon", ("user", "residence", "lisbon")),
    ("We moved away from Lisbon last year", ("user", "residence", "lisbon")),
    ("I moved from Lisbon to Porto", ("user", "residence", "lisbon")),
    ("My sister no longer lives in Berlin", ("sister", "residence", "berlin")),
    ("I left Google", ("user", "employer", "google")),
    ("I quit my job at Google", ("user", "employer", "google")),
    ("I just left my job at Google last week", ("user", "employer", "google")),
    ("I no longer work at Google", ("user", "employer", "google")),
    ("I don't work for Google anymore", ("user", "employer", "google")),
    ("I was laid off from Google", ("user", "employer", "google")),
    ("I stopped working at Google", ("user", "employer", "google")),
    ("My wife no longer works at Amazon", ("wife", "employer", "amazon")),
    ("I quit my job", ("user", "employer", "")),
    ("I quit my job to travel", ("user", "employer", "")),
    ("I got fired", ("user", "employer", "")),
    ("I retired", ("user", "employer", "")),
    ("I don't work there anymore", ("user", "employer", "")),
    ("I'm no longer a nurse", ("user", "job", "nurse")),
    ("I'm not a teacher anymore", ("user", "job", "teacher")),
    ("I stopped working as a nurse", ("user", "job", "nurse")),
    ("I'm not vegetarian anymore", ("user", "diet", "vegetarian")),
    ("I'm no longer vegan", ("user", "diet", "vegan")),
    ("I stopped being vegan", ("user", "diet", "vegan")),
    ("I stopped being a vegetarian", ("user", "diet", "vegetarian")),
    ("I gave up being vegan", ("user", "diet", "vegan")),
    ("I no longer eat meat", ("user", "diet", "omnivore")),
    ("I don't eat meat anymore", ("user", "diet", "omnivore")),
    ("I stopped eating meat", ("user", "diet", "omnivore")),
    ("I'm not married anymore", ("user", "relationship status", "married")),
    ("Actually, I no longer live in Lisbon!", ("user", "residence", "lisbon")),
]

NOT_RETRACTIONS = [
    "I don't like cilantro",
    "I no longer like jazz",
    "I quit smoking",
    "I left my keys at home",
    "I stopped running",
    "I live in Lisbon",
    "I work at Google",
    "I'm vegetarian",
    "I moved to Porto",
    "I left early",
    "I'm not sure",
    "I don't know",
    "I'm not a big fan of jazz",
    "I don't live in fear",
    "I never eat sugar",
    "",
    "thanks",
]


@pytest.mark.parametrize(("statement", "expected"), RETRACTIONS)
def test_negation_of_names_the_retracted_fact(statement: str, expected: tuple[str, str, str]) -> None:
    assert negation_of(statement) == FactKey(*expected)


@pytest.mark.parametrize("statement", NOT_RETRACTIONS)
def test_negation_of_returns_none_for_other_statements(statement: str) -> None:
    assert negation_of(statement) is None


@pytest.mark.parametrize(("statement", "expected"), RETRACTIONS)
def test_a_retraction_is_not_read_as_a_new_fact(statement: str, expected: tuple[str, str, str]) -> None:
    assert fact_key(statement) is None


@pytest.mark.parametrize(("statement", "expected"), RETRACTIONS)
def test_extract_facts_keeps_retractions(statement: str, expected: tuple[str, str, str]) -> None:
    assert len(extract_facts(statement)) == 1


@pytest.mark.parametrize(("statement", "expected"), FACT_KEYS)
def test_extract_facts_keeps_every_keyed_statement(statement: str, expected: tuple[str, str, str]) -> None:
    assert len(extract_facts(statement)) == 1


# --- normalize ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("I live in Lisbon!", "i live in lisbon."),
        ("I live in Lisbon", "  I   live\tin\nLisbon  "),
        ("I’m a nurse", "I'm a nurse"),
        ("I'm a nurse.", "Im a nurse"),
        ("My favourite band: Muse!", "my favourite band muse"),
        ("ＩＴ’S FULL-WIDTH", "it's full width"),
        ("Café au lait", "CAFÉ AU LAIT!!"),
        ("...I love jazz...", "I love jazz"),
    ],
)
def test_normalize_folds_case_whitespace_and_punctuation(left: str, right: str) -> None:
    assert normalize(left) == normalize(right)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("I live in Lisbon", "I live in Porto"),
        ("I love jazz", "I don't love jazz"),
        ("I have 3 kids", "I have 2 kids"),
    ],
)
def test_normalize_keeps_different_statements_apart(left: str, right: str) -> None:
    assert normalize(left) != normalize(right)


def test_normalize_output_shape() -> None:
    assert normalize("  Hello,   WORLD!! ") == "hello world"
    assert normalize("") == ""


# --- determinism and cost -----------------------------------------------------------------------------------

CORPUS = [text for text, _ in KEEP + MIXED + FACT_KEYS + RETRACTIONS] + DROP
SNAPSHOT = """
import json, sys
from memcubes.heuristics import extract_facts, fact_key, negation_of, normalize
corpus = json.load(sys.stdin)
print(repr([(extract_facts(m), fact_key(m), negation_of(m), normalize(m)) for m in corpus]))
"""


def test_results_are_deterministic_across_calls_and_hash_seeds() -> None:
    """Memories are compared across processes, so no answer may depend on set order or hash seeds."""
    first = repr([(extract_facts(m), fact_key(m), negation_of(m), normalize(m)) for m in CORPUS])
    assert repr([(extract_facts(m), fact_key(m), negation_of(m), normalize(m)) for m in CORPUS]) == first
    for seed in ("0", "12345"):
        done = subprocess.run(
            [sys.executable, "-c", SNAPSHOT],
            input=json.dumps(CORPUS),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.stdout.strip() == first
