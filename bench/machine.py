"""What a benchmark ran on, for its header: numbers from machines with other CPUs differ a lot."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_description() -> str:
    """``2 CPUs (AMD EPYC, AVX2, no VNNI)``. The int8 embedder's speed turns on VNNI: one query
    took ~2 ms on a core with it and ~9 ms (30 tokens) on one with AVX2 only."""
    model, flags = "unknown CPU", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vnni = "VNNI" if flags & {"avx512_vnni", "avx_vnni"} else "no VNNI"
    return f"{os.cpu_count()} CPUs ({model}, {vector}, {vnni})"
