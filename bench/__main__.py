"""``make bench`` / ``python -m bench [SECTION ...] [options]``: every benchmark, one table each.

Sections run in the order given (default: all of ``SECTIONS``). Each prints a header line saying
what was measured and how, then a plain-text table; its module docstring says how to read it.

    python -m bench                          # everything at default sizes: about 10 minutes
    python -m bench overhead --with-read     # also memproxy retrieving without write-back
    python -m bench overhead --with-key      # also memory off with a user key: the key check's cost
    python -m bench overhead --rounds 6 --requests 1200 --requests-loaded 4800 --max-seconds 30
                                             # more samples per cell for a steadier p99 (~30 min)
    python -m bench scale --max 1000000      # up to 1M memories (about 15-20 minutes)
    python -m bench scale --store postgresql # the same on a throwaway PostgreSQL server
    python -m bench overhead --store postgresql --replicas 2
                                             # two replicas sharing PostgreSQL against one
    python -m bench ann                      # exact search vs Chroma by space size (ann_min_entries)
    python -m bench cache                    # prompt-cache hits over a 50-turn conversation (~3 min)
    python -m bench imports --items 20000    # a mem0 import beside other users' adds and chats (~3 min)

A section is a module with ``add_arguments(parser)`` (its options, in its own argument group)
and ``main(args)``; add it to ``SECTIONS`` to make it part of ``make bench``.
"""

from __future__ import annotations

import argparse
import os
import time
from types import ModuleType

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import activation, ann, cache, imports, languages, overhead, scale, store

SECTIONS: dict[str, ModuleType] = {
    "overhead": overhead,
    "scale": scale,
    "ann": ann,
    "activation": activation,
    "cache": cache,
    "languages": languages,
    "imports": imports,
}


def build_parser() -> argparse.ArgumentParser:
    """One parser for every section; an option two sections both define is an error here."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    store.add_argument(parser)  # shared by scale and overhead
    for section in SECTIONS.values():
        section.add_arguments(parser)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in args.sections or list(SECTIONS):
        started = time.perf_counter()
        print(f"\n== {name} ==", flush=True)
        SECTIONS[name].main(args)
        print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
