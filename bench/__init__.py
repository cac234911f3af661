"""Benchmarks. They run keyed, like production and the tests: without PARITY_AUDIT_KEY every
part that writes the audit log refuses to start, so a benchmark run gets a random key."""

import os
import secrets

os.environ.setdefault("PARITY_AUDIT_KEY", "bench-" + secrets.token_hex(32))
