"""The training runs of the attention system: evidence batches, and exact resume through the Trainer."""

import dataclasses
import shutil

import numpy as np
import pytest

from frugal.scripts.systems.attention.config import CLS, FIRST_VALUE, MARKER, EvidenceTaskConfig
from frugal.scripts.systems.attention.tasks import (
    evidence_batch,
    evidence_test_set,
    make_evidence_batch,
    run_dir,
    train_longformer_evidence,
)

TINY = EvidenceTaskConfig(
    seq_len=32, attention_window=8, hidden_size=16, layers=1, heads=2, steps=12, batch_size=8, num_test=32
)


def test_evidence_batches_put_the_answer_after_the_marker_beyond_the_window():
    config = EvidenceTaskConfig(seq_len=64, attention_window=8, num_distractors=6)
    ids, labels = make_evidence_batch(np.random.default_rng(0), 64, config)
    assert ids.shape == (64, 64) and ids.dtype == np.int32 and labels.dtype == np.int32
    assert (ids[:, 0] == CLS).all()
    for row, label in zip(ids, labels):
        (where,) = np.flatnonzero(row == MARKER)  # exactly one marker
        assert where >= config.seq_len // 2 > config.attention_window
        assert row[where + 1] == FIRST_VALUE + label
    # distractors: value tokens elsewhere too, so position matters
    values = (ids >= FIRST_VALUE) & (ids < FIRST_VALUE + config.num_classes)
    assert values.sum() > len(ids)


def test_batches_are_a_function_of_the_step():
    a_ids, a_labels = evidence_batch(TINY, 5)
    b_ids, b_labels = evidence_batch(TINY, 5)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(evidence_batch(TINY, 6)[0], a_ids)
    # the test set is its own stream: never a training batch
    test_ids, _ = evidence_test_set(TINY)
    assert not any(np.array_equal(test_ids[: TINY.batch_size], evidence_batch(TINY, s)[0]) for s in range(TINY.steps))


def test_run_dir_depends_on_the_config():
    assert run_dir(None, "x", TINY) is None
    a = run_dir("/w", "evidence_global", TINY)
    assert a == run_dir("/w", "evidence_global", TINY) and a.parent.name == "w"
    assert a != run_dir("/w", "evidence_global", dataclasses.replace(TINY, steps=13))


@pytest.mark.slow
def test_interrupted_training_resumes_exactly_and_a_finished_run_is_reused(tmp_path):
    straight = train_longformer_evidence(TINY, workdir=tmp_path / "a")
    assert straight["resumed_from"] == 0 and len(straight["loss_curve"]) == TINY.steps

    first = train_longformer_evidence(TINY, workdir=tmp_path / "b", checkpoint_every=4)
    (run,) = (tmp_path / "b").iterdir()
    shutil.rmtree(run / "checkpoints" / str(TINY.steps))  # as if killed after the checkpoint at step 8
    resumed = train_longformer_evidence(TINY, workdir=tmp_path / "b", checkpoint_every=4)
    assert resumed["resumed_from"] == 8
    for result in (first, resumed):
        assert result["loss_curve"] == straight["loss_curve"]  # bit for bit: same batches, same keys
        assert result["test_accuracy"] == straight["test_accuracy"]

    reused = train_longformer_evidence(TINY, workdir=tmp_path / "a")
    assert reused["resumed_from"] == TINY.steps  # nothing trained again
    assert reused["loss_curve"] == straight["loss_curve"] and reused["test_accuracy"] == straight["test_accuracy"]
