"""`with launch(...) as server:` stops the server's process group on every way out of the block."""

import sys
from contextlib import nullcontext

import pytest

from servesweep.backends.process import ServerProcess
from servesweep.backends.vllm import LaunchedVllm, VllmConfig


def _launched(tmp_path) -> LaunchedVllm:
    # A sleeping child in its own group stands in for the server: the stop is the real one.
    process = ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "server.log",
                            "127.0.0.1", 1)
    process.start()
    return LaunchedVllm(config=VllmConfig(kind="vllm", model="/m"), process=process, argv=process.argv,
                        model_name="m", version=None, startup_s=0.0, kv_pool={}, gpu_indices=[], gpu_names=[])


@pytest.mark.parametrize("raised", [None, RuntimeError, KeyboardInterrupt])
def test_leaving_the_block_stops_the_process_group(tmp_path, raised):
    server = _launched(tmp_path)
    proc = server.process.proc
    with pytest.raises(raised) if raised else nullcontext():
        with server as entered:
            assert entered is server and proc.poll() is None
            if raised:
                raise raised()
    assert proc.returncode is not None  # the group's only member, stopped and reaped


def test_a_server_with_tokenize_names_no_tokenizer_dir(tmp_path):
    with _launched(tmp_path) as server:
        assert server.tokenizer_dir is None  # vLLM serves /tokenize: prompts are measured by the server
