"""The built-in target, in one place: the generated tiny Llama (servesweep.models.tiny), which has
no weights on disk, served by the default backend (the CPU build of vLLM here). `servesweep run`
and `demo` launch it when given no URL and no model; a scenario's `model: builtin` sweeps it.
"""

from __future__ import annotations

from typing import Any

from servesweep.backends import DEFAULT_KIND, ServerConfig, config_from_dict

BUILTIN_MODEL_NAME = "servesweep-tiny-llama"
# The tiny model's context: enough for every built-in workload, small enough for a CPU KV cache.
BUILTIN_MAX_MODEL_LEN = 2048


def builtin_model_defaults(config: ServerConfig) -> ServerConfig:
    """A configuration serving the tiny model: dummy weights where the server can use them (there
    are none on disk), and its context, where the configuration gives neither."""
    update: dict[str, Any] = {"max_model_len": config.max_model_len or BUILTIN_MAX_MODEL_LEN}
    if config.dummy_weights_supported and config.dummy_weights is None:
        update["dummy_weights"] = True
    return config.model_copy(update=update)


def builtin_server_config(**overrides: Any) -> ServerConfig:
    """The built-in target as one server: the default backend, bf16, under BUILTIN_MODEL_NAME, with
    `builtin_model_defaults`; `overrides` that are not None replace any of it."""
    from servesweep.models.tiny import build_tiny_model

    values: dict[str, Any] = dict(kind=DEFAULT_KIND, model=str(build_tiny_model()), served_model_name=BUILTIN_MODEL_NAME,
                                  precision="bf16", dummy_weights=True, max_model_len=BUILTIN_MAX_MODEL_LEN)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(values)
