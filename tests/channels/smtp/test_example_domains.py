"""The shipped placeholder support domain is named at start-up, so nobody runs it by mistake."""

from __future__ import annotations

import pytest

from connectors.smtp.server import is_example_domain

TABLE = [
    ("support.example.com", True),
    ("EXAMPLE.ORG", True),
    ("help.example.net.", True),
    ("mail.example", True),
    ("support.acme-example.com", False),
    ("examplecom.org", False),
    ("support.acme.com", False),
]


@pytest.mark.parametrize(("domain", "example"), TABLE)
def test_reserved_example_names_are_recognised(domain, example):
    assert is_example_domain(domain) is example
