"""Each channel's tests, fake server and fixtures: tests/channels/<connector>/."""
