"""The IMAP connector: polls mailboxes (with IDLE) and archives what it stored."""
