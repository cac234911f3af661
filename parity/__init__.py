"""Parity's composition root: the command line, the daemon and the wiring of the packages."""
