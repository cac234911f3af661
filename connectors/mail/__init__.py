"""What the email connectors share: the way out through the SMTP relay.

Email comes in through two connectors (the SMTP server, IMAP polling) and leaves through
one: the relay (relay.py), an SMTP *client* that belongs to neither. It is a package of its
own rather than part of connectors/smtp so that either intake can be disabled, or absent,
while replies still leave, and so that the imap package never has to import the smtp one
(the `independence` import contract forbids it). The mail parser itself is the normalizer's
(normalizer/mail.py with dsn.py and mailauth.py): both intakes store raw RFC 5322 bytes and
share one pipeline for them.
"""
