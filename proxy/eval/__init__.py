"""Benchmarks of memory quality, run against memproxy's HTTP API like any client would.

- ``locomo``: the LOCOMO data set, its ingestion through ``POST /v1/memories`` and the retrieval
  evaluation (evidence recall within a token budget) against the proxy and the baselines;
- ``baselines``: BM25, dense all-MiniLM-L6-v2 and their reciprocal-rank fusion, in-process;
- ``metrics``: budget packing, recall, summaries and tables shared by every system;
- ``qa``: the LLM-judged question-answering protocol through the chat endpoint.

``memproxy eval locomo`` (``proxy.commands.eval``) wires them together.
"""

from proxy.eval.locomo import EvalError, RetrievalReport, Sample, evaluate_retrieval, load_samples, local_proxy
from proxy.eval.qa import QAReport, qa_items, run_qa

__all__ = [
    "EvalError",
    "QAReport",
    "RetrievalReport",
    "Sample",
    "evaluate_retrieval",
    "load_samples",
    "local_proxy",
    "qa_items",
    "run_qa",
]
