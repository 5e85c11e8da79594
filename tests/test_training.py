"""Training and prediction alignment on tiny models for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainingArguments,
)

from bild_exp import train
from bild_exp.training.alignment import token_agreement
from bild_exp.training.exit_loss import (
    ExitLossTrainer,
    depth_losses,
    exit_loss_weights,
    resolve_exit_layers,
)
from bild_exp.training.finetune import tokenize_pairs
from tests.harness_fixtures import write_task_files
from tests.tiny_models import tiny_early_exit_model

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY_T5 = [
    "model.init=scratch",
    "+model.architecture={model_type: t5, d_model: 32, d_ff: 64, d_kv: 8, num_heads: 4, num_layers: 1, num_decoder_layers: 2}",
]


def train_cfg(tmp_path: Path, files: dict[str, str], *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                "task=custom",
                f"task.data_files.train={files['train']}",
                f"task.data_files.validation={files['validation']}",
                "task.source_field=de",
                "task.target_field=en",
                "task.max_new_tokens=16",
                "recipe=tiny",
                "logger=none",
                f"tokenizer.name_or_path={tmp_path / 'tokenizer'}",
                "tokenizer.train_vocab_size=60",
                *overrides,
            ],
        )


def losses(output_dir: Path) -> list[float]:
    state = json.loads(sorted(output_dir.glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.fixture(scope="module")
def trained_large(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    files = write_task_files(root, n=48)
    cfg = train_cfg(
        root,
        files,
        *TINY_T5,
        "recipe.max_steps=60",
        "recipe.save_steps=60",
        f"output_dir={root / 'large'}",
        "model.architecture.num_decoder_layers=2",
        "model.seed=1",
    )
    return root, files, train.run(cfg)


def test_finetuning_lowers_the_loss_and_saves_a_loadable_model(trained_large):
    root, _, final_dir = trained_large
    history = losses(root / "large")
    assert len(history) >= 10
    assert sum(history[-3:]) / 3 < 0.8 * sum(history[:3]) / 3
    model = AutoModelForSeq2SeqLM.from_pretrained(final_dir)
    tokenizer = AutoTokenizer.from_pretrained(final_dir)
    assert model.config.num_decoder_layers == 2 and tokenizer.eos_token == "</s>"


def test_trained_tokenizer_round_trips(trained_large):
    root, _, _ = trained_large
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    ids = tokenizer("das haus ist klein .")["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "das haus ist klein ."


def test_alignment_increases_agreement_with_the_large_model(trained_large):
    root, files, large_dir = trained_large
    small_cfg = train_cfg(
        root,
        files,
        *TINY_T5,
        "recipe.max_steps=8",
        f"output_dir={root / 'small'}",
        "model.architecture.num_decoder_layers=1",
        "model.seed=2",
    )
    small_dir = train.run(small_cfg)
    align_cfg = train_cfg(
        root,
        files,
        "mode=align",
        f"alignment.large={large_dir}",
        "alignment.init=finetuned",
        f"alignment.finetuned_small={small_dir}",
        "alignment.batch_size=16",
        "alignment.shard_size=20",
        "recipe.max_steps=60",
        f"output_dir={root / 'aligned'}",
    )
    aligned_dir = train.run(align_cfg)
    calibration = json.loads(
        "["
        + ",".join(
            (root / "aligned" / "calibration" / "shards" / "shard-00000.jsonl")
            .read_text()
            .splitlines()
        )
        + "]"
    )
    assert (
        len(list((root / "aligned" / "calibration" / "shards").glob("*.jsonl"))) == 3
    )  # 48 sources / 20
    assert (root / "aligned" / "calibration" / "dataset").exists()
    sources = [row["source"] for row in calibration]
    targets = [row["target"] for row in calibration]
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    large = AutoModelForSeq2SeqLM.from_pretrained(large_dir)
    before = token_agreement(
        large, AutoModelForSeq2SeqLM.from_pretrained(small_dir), tokenizer, sources, targets
    )
    after = token_agreement(
        large, AutoModelForSeq2SeqLM.from_pretrained(aligned_dir), tokenizer, sources, targets
    )
    assert after > before + 0.1


def test_calibration_generation_resumes_from_written_shards(trained_large, tmp_path):
    from bild_exp.training.alignment import generate_calibration_set

    _, _, large_dir = trained_large
    tokenizer = AutoTokenizer.from_pretrained(large_dir)
    large = AutoModelForSeq2SeqLM.from_pretrained(large_dir)
    sources = ["das haus ist klein .", "der hund ist alt .", "ich sehe die katze ."]
    first = generate_calibration_set(
        large, tokenizer, sources, tmp_path, batch_size=2, shard_size=2, max_new_tokens=8
    )
    shard = tmp_path / "shards" / "shard-00000.jsonl"
    marker = shard.read_text().replace('"target": "', '"target": "KEPT ', 1)
    shard.write_text(marker)  # a finished shard is never regenerated
    (tmp_path / "shards" / "shard-00001.jsonl").unlink()  # as if killed before the last shard
    second = generate_calibration_set(
        large, tokenizer, sources, tmp_path, batch_size=2, shard_size=2, max_new_tokens=8
    )
    assert second["target"][0].startswith("KEPT ")
    assert second["target"][1:] == first["target"][1:]
    assert len(second) == 3


def test_exit_loss_weights_and_depths_by_hand():
    assert resolve_exit_layers([1, "last"], 8) == [1, 8]
    assert resolve_exit_layers("all", 3) == [1, 2, 3]
    assert exit_loss_weights([1, 8], "equal") == [0.5, 0.5]
    # CALM: w_i = i / sum_j j over 1..4 -> 1/10, 2/10, 3/10, 4/10
    assert exit_loss_weights([1, 2, 3, 4], "depth") == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert exit_loss_weights([2, 4], [1, 3]) == [0.25, 0.75]
    with pytest.raises(
        ValueError, match=r"^exit_loss.layers entry=9 is invalid: accepted a depth in 1\.\.8"
    ):
        resolve_exit_layers([1, 9], 8)
    with pytest.raises(ValueError, match=r"^exit_loss.weights='sqrt' is invalid"):
        exit_loss_weights([1, 8], "sqrt")
    with pytest.raises(ValueError, match=r"^exit_loss.weights=\[1\] is invalid: accepted 2"):
        exit_loss_weights([1, 8], [1])


def test_exit_loss_training_averages_the_exit_and_final_losses(trained_large, tmp_path):
    root, files, final_dir = trained_large
    tokenizer = AutoTokenizer.from_pretrained(final_dir)
    pairs = tokenize_pairs(
        tokenizer, ["ein kleines Haus", "der Hund"], ["a small house", "the dog"], 16, 16
    )
    batch = DataCollatorForSeq2Seq(tokenizer)([dict(row) for row in pairs])
    model = AutoModelForSeq2SeqLM.from_pretrained(final_dir).eval()
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none")
    trainer = ExitLossTrainer(model=model, args=args, exit_depths=[1, 2], exit_weights=[0.5, 0.5])
    with torch.no_grad():
        before = depth_losses(model, batch)
        combined = trainer.compute_loss(model, batch)
    assert float(combined) == pytest.approx((before[0] + before[1]) / 2, rel=1e-5)
    cfg = train_cfg(
        root,
        files,
        "model.init=pretrained",
        f"model.name_or_path={final_dir}",
        "exit_loss.layers=[1,last]",
        "recipe.max_steps=40",
        "recipe.save_steps=40",
        f"output_dir={tmp_path / 'early-exit'}",
    )
    tuned = AutoModelForSeq2SeqLM.from_pretrained(train.run(cfg)).eval()
    history = json.loads((tmp_path / "early-exit" / "final" / "trainer_state.json").read_text())
    logged = [entry for entry in history["log_history"] if "loss" in entry]
    # every logged loss is the average of the two exits' losses it was logged with
    for entry in logged:
        mean = (entry["loss_depth_1"] + entry["loss_depth_2"]) / 2
        assert entry["loss"] == pytest.approx(mean, rel=0.02)
    with torch.no_grad():
        after = depth_losses(tuned, batch)
    # the exit layer, never trained to predict before, learns to: its loss drops and the gap
    # to the full model's narrows
    assert after[0] < 0.9 * before[0]
    assert after[0] - after[-1] < before[0] - before[-1]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["mode=early_exit", "pair.early_exit_layers=2"], ([2, 4], [0.5, 0.5])),
        (["mode=calm"], ([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])),
        (
            ["mode=calm", "exit_loss.layers=[3,last]", "exit_loss.weights=[1,1]"],
            ([3, 4], [0.5, 0.5]),
        ),
        (["mode=finetune"], None),
    ],
)
def test_training_modes_choose_their_exit_loss(tmp_path, overrides, expected):
    files = write_task_files(tmp_path, n=4)
    cfg = train_cfg(tmp_path, files, *overrides)
    model = tiny_early_exit_model("t5")  # 4 decoder layers
    assert train.exit_loss_setting(cfg, model) == (
        None if expected is None else (expected[0], pytest.approx(expected[1]))
    )
