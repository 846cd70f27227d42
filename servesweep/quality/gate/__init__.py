"""Accuracy gate: a task-level metric measured through the server, compared with a reference."""
