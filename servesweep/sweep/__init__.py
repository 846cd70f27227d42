"""Sweeps: every server configuration x load level (runner.py), the adaptive load search
(ladder.py), memory sizing (sizing.py) and the verification of the recommendation (verify.py,
confirm.py)."""


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM during a sweep: finished points are on disk, the rest resumes."""
