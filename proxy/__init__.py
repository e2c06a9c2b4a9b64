"""memproxy's HTTP surface: an OpenAI-compatible proxy that adds memory (see ``memcubes``)."""

from memcubes.environment import apply_offline_defaults

apply_offline_defaults()

from typing import Any  # noqa: E402

from proxy.config import ConfigError, Settings  # noqa: E402 - the offline defaults come first

__all__ = ["ConfigError", "Settings", "build_app"]


def __getattr__(name: str) -> Any:
    """``build_app`` imports the whole stack (torch among it); the CLI's light commands need not."""
    if name == "build_app":
        from proxy.app import build_app

        return build_app
    raise AttributeError(name)
