"""servesweep: measure LLM inference servers under load."""

__version__ = "0.1.0"
