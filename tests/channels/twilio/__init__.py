"""The Twilio connector's tests, its fake API and fixtures."""
