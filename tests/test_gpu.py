"""The CUDA path (``make test-gpu``: the first command on a new GPU machine, before
``make paper``): exactness on the device against the CPU, honest timing of asynchronous
work, the manifest's GPU facts, the compiled path with CUDA graphs, GPU placement, a sweep
of the shipped T5 demo pair on the GPU that resumes, and the float16 refusal for T5.

Every test is marked ``gpu`` (deselected by ``make test``) and skipped with its reason
where no CUDA device exists. Tiny models are built from configs and the demo pair ships in
the package: no Hub, no network. Sized to run in minutes on one GPU."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from bild_exp.decoding import generate
from bild_exp.errors import InvalidParameterError
from tests.tiny_models import decode_with, prompt, tiny_pair

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA device (torch.cuda.is_available() is False): make test-gpu needs a GPU",
    ),
]

CUDA = torch.device("cuda")
MAX_NEW = 20
FAMILIES = ("t5", "llama")
LOSSLESS = {"fallback_threshold": 0.5, "rollback_threshold": 0.0, "verify_tail": True}
# method -> parameters whose greedy output is vanilla large's by construction
EXACT_METHODS = {
    "large": {},
    "bild_paper": {**LOSSLESS, "schedule": "paper"},
    "bild_official": {**LOSSLESS, "schedule": "official"},
    "speculative": {"window": 4},
    "oracle_replace_all": {"oracle_threshold": 1.0},  # every token the large model's
    "hf_assisted": {"num_assistant_tokens": 4},
    "prompt_lookup": {"prompt_lookup_num_tokens": 4},
}


def engine_method(name: str) -> str:
    return {"bild_paper": "bild", "bild_official": "bild", "oracle_replace_all": "oracle"}.get(
        name, name
    )


def pair_on(family: str, device: torch.device, dtype: torch.dtype):
    """Copies of the tiny trained pair (float64 on the CPU) in ``dtype`` on ``device``."""
    large, small = tiny_pair(family)
    return (
        copy.deepcopy(large).to(device=device, dtype=dtype).eval(),
        copy.deepcopy(small).to(device=device, dtype=dtype).eval(),
    )


@pytest.fixture(scope="module", params=FAMILIES)
def float32_pairs(request):
    family = request.param
    return (
        family,
        pair_on(family, torch.device("cpu"), torch.float32),
        pair_on(family, CUDA, torch.float32),
    )


@pytest.mark.parametrize("name", sorted(EXACT_METHODS))
def test_each_exact_method_gives_the_cpus_tokens_on_the_gpu_in_float32(float32_pairs, name):
    family, cpu_pair, gpu_pair = float32_pairs
    method, params = engine_method(name), EXACT_METHODS[name]
    for seed in (0, 1):
        ids = prompt(family, seed)
        on_cpu = decode_with(method, *cpu_pair, ids, MAX_NEW, **params)
        on_gpu = decode_with(method, *gpu_pair, ids.to(CUDA), MAX_NEW, **params)
        vanilla = decode_with("large", *gpu_pair, ids.to(CUDA), MAX_NEW)
        assert on_gpu.tokens == on_cpu.tokens, (name, seed)
        assert on_gpu.tokens == vanilla.tokens, (name, seed)


HALF_CASES = [
    ("t5", torch.bfloat16),
    ("llama", torch.bfloat16),
    ("llama", torch.float16),  # T5 overflows in float16: refused (last test)
]


@pytest.mark.parametrize(("family", "dtype"), HALF_CASES, ids=lambda v: str(v))
def test_lossless_bild_and_speculative_equal_vanilla_large_in_half_precision(family, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    large, small = pair_on(family, CUDA, dtype)
    for seed in (0, 1, 2):
        ids = prompt(family, seed).to(CUDA)
        vanilla = decode_with("large", large, small, ids, MAX_NEW).tokens
        for method, params in (("bild", LOSSLESS), ("speculative", {"window": 4})):
            tokens = decode_with(method, large, small, ids, MAX_NEW, **params).tokens
            assert tokens == vanilla, (family, dtype, method, seed)


def test_a_timed_region_waits_for_the_asynchronous_work_it_launched():
    from bild_exp.timing import timed

    cycles = 200_000_000  # a few tenths of a second on current GPUs
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    true_seconds = start.elapsed_time(end) / 1000
    assert true_seconds > 0.05  # the kernel is long enough to tell the two timers apart
    _, seconds = timed(lambda: torch.cuda._sleep(cycles), CUDA)
    assert seconds >= 0.9 * true_seconds
    # without the synchronisation the launch returns at once: this is what timed() prevents
    torch.cuda.synchronize()
    begin = time.perf_counter()
    torch.cuda._sleep(cycles)
    unsynchronised = time.perf_counter() - begin
    torch.cuda.synchronize()
    assert unsynchronised < 0.5 * true_seconds


def test_the_device_description_and_manifest_record_the_gpu():
    from bild_exp.harness.records.manifest import peak_memory_gb
    from bild_exp.timing import device_description

    held = torch.empty(64 * 1024 * 1024, device=CUDA)  # 256 MB: visible at 0.01 GB resolution
    device = device_description(CUDA)
    assert device["device_name"] == torch.cuda.get_device_name(CUDA)
    assert device["cuda_runtime"] == torch.version.cuda
    assert "cuda_driver" in device and "cuda_matmul_allow_tf32" in device
    assert device["cuda_matmul_allow_tf32"] == torch.backends.cuda.matmul.allow_tf32
    assert peak_memory_gb()["cuda_allocated"] >= 0.26
    del held


@pytest.mark.parametrize("method", ["large", "bild", "speculative"])
def test_the_compiled_path_equals_eager_on_the_gpu(method):
    """``engine.compile=true`` in its default mode (CUDA graphs, reduce-overhead's options):
    the same tokens as eager, and the first call (compilation) is separate from the timed
    ones."""
    large, small = pair_on("llama", CUDA, torch.float32)
    params = {"bild": LOSSLESS, "speculative": {"window": 4}}.get(method, {})
    ids = prompt("llama", 0).to(CUDA)
    eager = decode_with(method, large, small, ids, MAX_NEW, **params).tokens
    members = {"large": None if method == "small" else large, "small": small}
    compiled = generate(
        method, **members, input_ids=ids, max_new_tokens=MAX_NEW, compile=True, **params
    )
    assert compiled.tokens == eager
    from bild_exp.decoding.compiled import compile_stats

    compiled_models = [m for m in members.values() if m is not None]
    after_first = [compile_stats(m) for m in compiled_models]
    assert sum(stats["n_graphs"] for stats in after_first) > 0  # the first call compiled
    again = generate(
        method, **members, input_ids=ids, max_new_tokens=MAX_NEW, compile=True, **params
    )
    assert again.tokens == eager
    # the second call (what a sweep times after its warm-up) compiled nothing
    after_second = [compile_stats(m) for m in compiled_models]
    assert [s["n_graphs"] for s in after_second] == [s["n_graphs"] for s in after_first]
    assert [s["compile_s"] for s in after_second] == [s["compile_s"] for s in after_first]


def test_placement_takes_a_free_gpu_and_decodes_the_same_tokens(tmp_path, monkeypatch):
    from bild_exp.harness.run.placement import placed

    monkeypatch.setenv("BILD_EXP_CACHE", str(tmp_path))  # this test's own GPU locks
    ids = prompt("llama", 0)
    reference = decode_with(
        "bild", *pair_on("llama", CUDA, torch.float32), ids.to(CUDA), MAX_NEW, **LOSSLESS
    )
    with placed(torch.device("cuda")) as first:
        assert first.type == "cuda"
        large, small = pair_on("llama", first, torch.float32)
        tokens = decode_with("bild", large, small, ids.to(first), MAX_NEW, **LOSSLESS).tokens
        assert tokens == reference.tokens
        if torch.cuda.device_count() < 2:
            return  # the two-GPU half below needs a second device
        with placed(torch.device("cuda")) as second:  # the first GPU is held: the next one
            assert second != first
            large, small = pair_on("llama", second, torch.float32)
            tokens = decode_with("bild", large, small, ids.to(second), MAX_NEW, **LOSSLESS)
            assert tokens.tokens == reference.tokens


@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="fewer than two GPUs: two-GPU placement needs two"
)
def test_two_jobs_hold_two_different_gpus(tmp_path, monkeypatch):
    from bild_exp.harness.run.placement import placed

    monkeypatch.setenv("BILD_EXP_CACHE", str(tmp_path))
    with placed(torch.device("cuda")) as first, placed(torch.device("cuda")) as second:
        assert {first.index, second.index} == {0, 1}


def test_a_sweep_of_the_demo_pair_on_the_gpu_summarises_plots_and_resumes(tmp_path):
    from bild_exp import sweep
    from tests.harness_fixtures import compose_sweep

    overrides = [
        "pair.device=cuda",
        "method=bild",
        "grid.fallback_threshold=[0.5]",
        "grid.rollback_threshold=[2.0]",
        "pair.small_variants=[base]",
        "data.limit=4",
        "data.warmup=1",
        f"results_dir={tmp_path}",
        "logger=none",
        "progress=false",
        "sweep.call_cost_repeats=1",
    ]
    first = sweep.run(compose_sweep(overrides))
    assert len(first.summary) == 2 and (first.summary["n_examples"] == 4).all()
    assert (first.run_dir / "pareto.png").exists()
    import json

    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["device"]["device"].startswith("cuda")
    assert isinstance(manifest["peak_memory_gb"]["cuda_allocated"], float)
    assert manifest["device"]["cuda_runtime"] == torch.version.cuda
    parts = sorted((tmp_path / "sweep").rglob("part-*.parquet"))
    again = sweep.run(compose_sweep(overrides))  # everything stored: nothing decoded again
    assert sorted((tmp_path / "sweep").rglob("part-*.parquet")) == parts
    assert again.summary["bleu"].tolist() == first.summary["bleu"].tolist()


def test_float16_t5_is_refused_in_one_line_before_loading_on_the_gpu(tmp_path):
    from bild_exp import sweep
    from tests.harness_fixtures import compose_sweep

    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    cfg = compose_sweep(
        ["pair.device=cuda", "pair.dtype=float16", f"results_dir={tmp_path}", "logger=none"]
    )
    with pytest.raises(InvalidParameterError, match=r"^pair.dtype='float16' is invalid for t5"):
        sweep.run(cfg)
    assert torch.cuda.memory_allocated() == allocated  # no weights reached the GPU
