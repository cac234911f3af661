"""The public contact form and the case status page: channel `web`, on the HTTP listener.

`GET /contact` is a form anyone may fill in without an account; `POST /contact` stores it
through intake before answering; `GET /status/<reference>?t=<token>` shows a case to whoever
holds its link. See docs/channels/webform.md and docs/security/webform.md.
"""
