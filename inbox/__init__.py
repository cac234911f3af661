"""The case store and everything agents and managers work with: cases, messages, contacts."""
