"""The Twitter/X connector: mentions and DMs polled in, replies and acknowledgements out."""
