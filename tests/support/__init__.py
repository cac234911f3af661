"""Helpers every test may use: stores, fakes of the outside world, sample mail."""
