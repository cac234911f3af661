"""Turns stored raw input into one channel-neutral Message, deduplicated and threaded."""
