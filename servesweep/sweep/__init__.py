"""Sweeps: every server configuration x load level (sweep_runner.py), the adaptive load search
(ladder.py), memory sizing (sizing.py), the verification of the recommendation (verify_plan.py: the
plan and the judgement; verify_run.py: runs it) and the headroom of the verified configuration
(headroom_plan.py, headroom_run.py)."""

DEFAULT_START_S = 240.0  # a server start, when the configuration did not record its own


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM during a sweep: finished points are on disk, the rest resumes."""
