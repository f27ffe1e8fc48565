"""CLI command groups: each module exposes ``register(subparsers)``; see ``edgecond/cli.py``."""
