"""LiteLLM proxy's own virtual environment, created on first use (``bench/.venv-litellm``).

It is separate from memproxy's: memproxy pins litellm 1.110.2 as a library, whose ``[proxy]``
extra needs a ``litellm-proxy`` package this registry does not serve, while
``litellm[proxy]==1.106.12`` installs. ``httptools`` is added so both proxies run on the same
HTTP stack (uvicorn + uvloop + httptools) and the comparison is about the proxies, not the parser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.servers import ROOT

LITELLM_VERSION = "1.106.12"
REQUIREMENTS = (f"litellm[proxy]=={LITELLM_VERSION}", "httptools")
VENV = ROOT / "bench" / ".venv-litellm"


def _stamp(venv: Path) -> Path:
    return venv / f".installed-litellm-{LITELLM_VERSION}"


def ensure_litellm(venv: Path = VENV) -> Path:
    """The ``litellm`` executable of ``venv``, installing it first if needed (about 30 s)."""
    executable = venv / "bin" / "litellm"
    if _stamp(venv).exists() and executable.exists():
        return executable
    print(f"creating {venv} with {', '.join(REQUIREMENTS)} (once) ...", flush=True)
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run([*pip, *REQUIREMENTS], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"could not install {REQUIREMENTS} into {venv}:\n{result.stderr[-3000:]}")
    _stamp(venv).touch()
    return executable
