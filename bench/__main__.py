"""``make bench`` / ``python -m bench [section ...]``: every benchmark, one table each."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import overhead

SECTIONS = {"overhead": overhead}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], default=list(SECTIONS))
    known, rest = parser.parse_known_args()
    for name in known.sections or list(SECTIONS):
        section = SECTIONS[name]
        section_parser = argparse.ArgumentParser(prog=f"python -m bench {name}")
        section.add_arguments(section_parser)
        args, _ = section_parser.parse_known_args(rest)
        print(f"\n== {name} ==", flush=True)
        section.main(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
