"""A Locust HttpUser that streams OpenAI completions and times every chunk, as a Locust user would write it.

Configured through the environment by bench/peers.py: STREAM_OUT (JSONL of per-request times),
STREAM_MODEL, STREAM_TOKENS, STREAM_REQUESTS (the run stops after that many), STREAM_PACED
(1: each user sends 10 requests/s, constant_throughput; 0: back to back).
"""

import json
import os
import time

from locust import HttpUser, constant, constant_throughput, events, task
from locust.exception import StopUser

OUT = open(os.environ["STREAM_OUT"], "w")
MODEL = os.environ.get("STREAM_MODEL", "stand-in")
TOKENS = int(os.environ.get("STREAM_TOKENS", "16"))
LIMIT = int(os.environ.get("STREAM_REQUESTS", "100"))
PACED = os.environ.get("STREAM_PACED") == "1"
started = 0
finished = 0


class StreamingUser(HttpUser):
    wait_time = constant_throughput(10) if PACED else constant(0)

    @task
    def complete(self) -> None:
        global started, finished
        if started >= LIMIT:
            raise StopUser()
        started += 1
        payload = {"model": MODEL, "prompt": "hello " * 16, "max_tokens": TOKENS, "stream": True,
                   "ignore_eos": True}
        sent = time.perf_counter()
        chunks = []
        with self.client.post("/v1/completions", json=payload, stream=True, timeout=600,
                              catch_response=True) as resp:
            buffer = b""
            # chunk_size=None: hand over each piece as it arrives instead of waiting for a full block.
            for data in resp.iter_content(chunk_size=None):
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if event.startswith(b"data: ") and event[6:] != b"[DONE]":
                        json.loads(event[6:])
                        chunks.append(time.perf_counter())
        OUT.write(json.dumps({"sent": sent, "chunks": chunks}) + "\n")
        finished += 1
        if finished == LIMIT:
            # runner.quit() from a user greenlet hangs in headless mode (it waits on the users,
            # this one included); the run's data is in OUT, so end the process here.
            OUT.flush()
            os._exit(0)


@events.quitting.add_listener
def _close(environment, **kwargs) -> None:
    OUT.flush()
