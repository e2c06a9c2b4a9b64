"""``memproxy`` subcommands beyond ``serve``: one module per command group (``memories``,
``bundles`` for export/import, ``eval``), each exposing ``register(subparsers)``; ``client`` holds
what the commands that talk to a running proxy over HTTP share."""
