"""Synthetic memories and chat requests: varied enough that deduplication keeps them apart and
the query-embedding cache never answers for the model, deterministic for a given seed."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from bench.servers import MODEL

TOPICS = (
    "green tea, espresso, hiking, Lisbon, Porto, Kyoto, cats, a beagle, jazz, the piano, the cello, "
    "marathons, sushi, fresh pasta, Berlin, gardening, beekeeping, tomatoes, chess, crime novels, "
    "cycling, yoga, Python, watercolour painting, sailing, tennis, ramen, Tokyo, the violin, pottery, "
    "bouldering, sourdough, birdwatching, Oslo, kayaking, board games, salsa dancing, astronomy, "
    "vintage cameras, Mexican food, Rust, origami, surfing, Vienna, opera, knitting, Thai curry, "
    "trail running, Lagos, podcasts about history"
).split(", ")
PEOPLE = ("my sister Ana", "my brother Tom", "my partner Sam", "my friend Lee", "my manager Priya", "my dad")
TEMPLATES = (
    "I really enjoy {a}, especially with {b}.",
    "{person} got me into {a} back in {year}.",
    "I am planning a trip to learn about {a} next {month}.",
    "I stopped doing {a} in {year} but I still like {b}.",
    "My favourite weekend is {a} in the morning and {b} at night.",
    "{person} and I argue about {a} versus {b}.",
    "I have been saving money for {a} since {month} {year}.",
    "I am allergic to {a}, so I avoid it when {person} cooks.",
)
MONTHS = "January February March April May June July August September October November December".split()


def fact(rng: random.Random) -> str:
    a, b = rng.sample(TOPICS, 2)
    return rng.choice(TEMPLATES).format(
        a=a, b=b, person=rng.choice(PEOPLE), year=rng.randint(1995, 2025), month=rng.choice(MONTHS)
    )


def facts(count: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [fact(rng) for _ in range(count)]


def chat_bodies(*, user: str, seed: int) -> Iterator[dict[str, Any]]:
    """Chat requests of one user; every user turn is new text (a running number ends it)."""
    rng = random.Random(seed)
    for number in itertools.count():
        question = f"What would go well with {rng.choice(TOPICS)} this {rng.choice(MONTHS)}? (#{seed}-{number})"
        yield {
            "model": MODEL,
            "user": user,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": f"{fact(rng)} {question}"},
            ],
        }
