"""Locustfiles shipped with servesweep, passed to Locust by path (`locust -f` takes no module names).
This directory holds nothing else: Locust puts a locustfile's directory on sys.path, where any other
module would shadow a top-level one of the same name."""
