"""Choosing the next token from logits: greedy, temperature and nucleus (top-p) sampling.

Each generation owns its sampler and its random generator, so concurrent generations on one
model neither share nor disturb a global RNG, and a seed makes a sampled answer reproducible.
"""

from __future__ import annotations

import torch


class TokenSampler:
    """Greedy when ``temperature == 0``, else softmax(logits / temperature) cut to ``top_p``."""

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = temperature
        self.top_p = top_p
        self._generator: torch.Generator | None = None
        if temperature > 0:
            self._generator = torch.Generator(device=device)
            if seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(seed)

    @property
    def greedy(self) -> bool:
        return self._generator is None

    def __call__(self, logits: torch.Tensor) -> int:
        """The next token id, from the logits of one position (shape ``[vocab]``)."""
        if self._generator is None:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            # keep the smallest head whose mass reaches top_p; the first token always stays
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            choice = torch.multinomial(sorted_probs, 1, generator=self._generator)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=self._generator).item())
