"""The Reddit connector's tests, its fake API and fixtures."""
