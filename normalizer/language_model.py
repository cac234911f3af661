"""Imported by the parse pool's forkserver (normalizer/pool.py) for its side effect: the
language detector's model is loaded there once, before any parse child is forked, so every
child has it and no message's parse budget pays the second or more it takes to load."""

from __future__ import annotations

from normalizer.language import identifier

identifier()
