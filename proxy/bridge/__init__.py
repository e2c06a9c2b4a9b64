"""Translations between API shapes, for deployments that speak only chat completions."""
