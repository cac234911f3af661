"""The IMAP connector's tests (against a local Dovecot, tests/support/dovecot.py)."""
