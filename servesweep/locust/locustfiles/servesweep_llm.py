"""The locustfile `servesweep locust` runs: servesweep's LLM user and its Locust plugin.

    locust -f "$(python -c 'import servesweep.locust as m; print(m.LOCUSTFILE)')" --servesweep-config JSON

`servesweep locust` writes that command for you (and validates the run first).
"""

from servesweep.locust.plugin import install
from servesweep.locust.user import LLMUser

install()

__all__ = ["LLMUser"]
