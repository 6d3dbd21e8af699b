"""The ``userpulse`` command line: one entry point for every part of the platform."""
