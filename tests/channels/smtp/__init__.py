"""The SMTP connector's tests."""
