"""memproxy's HTTP surface: an OpenAI-compatible proxy that adds memory (see ``memcubes``)."""

from memcubes.environment import apply_offline_defaults

apply_offline_defaults()

from proxy.app import build_app  # noqa: E402 - the offline defaults must precede library imports
from proxy.config import ConfigError, Settings  # noqa: E402

__all__ = ["ConfigError", "Settings", "build_app"]
