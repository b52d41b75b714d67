"""Sequence recommender: sequences, windows, split, metrics worked out by hand, and a
model that must learn a deterministic pattern."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from models_ml.items import seqrec, sequences


def events(rows):
    t0 = datetime(2024, 1, 1)
    return pl.DataFrame(
        [(u, i, t0 + timedelta(hours=h)) for u, i, h in rows],
        schema={"user_id": pl.String, "item_id": pl.String, "event_ts": pl.Datetime("us")},
        orient="row",
    )


CATALOG = sequences.Catalog.from_items(["a", "b", "c", "d", "e"])  # a=1 ... e=5


def test_sequences_are_time_ordered_deduplicated_and_tie_broken_by_item():
    df = events([("u1", "c", 2), ("u1", "a", 1), ("u1", "c", 5), ("u1", "e", 2), ("u2", "b", 0)])
    seqs = sequences.sequences_from_frame(df, CATALOG, source="fixture")
    assert seqs.user_ids == ("u1", "u2")
    # u1: a@1, then c and e tie at 2 -> c before e; the second c (at 5) is dropped.
    assert seqs.row(0).tolist() == [1, 3, 5]
    assert seqs.row(1).tolist() == [2]


def test_unknown_item_is_an_error_naming_the_source():
    with pytest.raises(ValueError, match=r"fixture: 1 rows reference item ids missing.*'zz'"):
        sequences.sequences_from_frame(events([("u1", "zz", 0)]), CATALOG, source="fixture")


def test_duplicate_catalog_ids_rejected():
    with pytest.raises(ValueError, match="1 duplicate"):
        sequences.Catalog.from_items(["a", "a", "b"])


def test_training_windows_cover_every_transition_once():
    seqs = sequences.from_rows(("u",), [np.array([1, 2, 3, 4, 5, 6])])
    w = sequences.training_windows(seqs, max_len=3)
    # from the end: [3,4,5,6], then [1,2,3] (shares item 3), left-padded to 4
    assert w.tolist() == [[3, 4, 5, 6], [0, 1, 2, 3]]
    # transitions (x -> y with x, y real): 3-4, 4-5, 5-6, 1-2, 2-3 = all five once
    pairs = {(r[j], r[j + 1]) for r in w.tolist() for j in range(3) if r[j] and r[j + 1]}
    assert pairs == {(1, 2), (2, 3), (3, 4), (4, 5), (5, 6)}


def test_leave_last_out_split():
    seqs = sequences.from_rows(("u1", "u2", "u3"), [np.array([1, 2, 3, 4]), np.array([5, 1]), np.array([2])])
    s = seqrec.leave_last_out(seqs)
    assert [s.train.row(i).tolist() for i in range(3)] == [[1, 2], [], []]
    assert s.valid_inputs.user_ids == ("u1",) and s.valid_inputs.row(0).tolist() == [1, 2]
    assert s.valid_targets.tolist() == [3]
    assert s.test_inputs.user_ids == ("u1", "u2")
    assert [s.test_inputs.row(i).tolist() for i in range(2)] == [[1, 2, 3], [5]]
    assert s.test_targets.tolist() == [4, 1]


def test_ranking_metrics_by_hand():
    # ranks 0, 3, 12 at k=10: HR = 2/3; NDCG = (1/log2(2) + 1/log2(5) + 0) / 3
    m = seqrec.ranking_metrics(np.array([0, 3, 12]), 10)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 3)


def test_target_rank_breaks_ties_by_lower_index():
    scores = torch.tensor([[float("-inf"), 1.0, 2.0, 2.0, 0.5]])
    assert seqrec.target_ranks(scores, torch.tensor([3])).tolist() == [1]  # item 2 ties and wins
    assert seqrec.target_ranks(scores, torch.tensor([2])).tolist() == [0]
    assert seqrec.target_ranks(scores, torch.tensor([4])).tolist() == [3]


def test_popularity_evaluation_by_hand():
    # Training counts: a 3, b 2, c 1, d 0, e 0.
    train = sequences.from_rows(("x", "y", "z"), [np.array([1, 2, 3]), np.array([1, 2]), np.array([1])])
    pop = seqrec.popularity_scores(train, CATALOG.n_items)
    inputs = sequences.from_rows(("p", "q"), [np.array([1]), np.array([2, 3])])
    # p: a masked -> order b(2), c(1), d, e -> target d ranks 2 (d before e by index)
    # q: b, c masked -> order a(3), d, e -> target a ranks 0
    out = seqrec.evaluate_scorer(seqrec.popularity_scorer(pop), inputs, np.array([4, 1]), k=2)
    assert out == {"hr@2": 0.5, "ndcg@2": 0.5, "n_users": 2}


def test_sasrec_learns_a_deterministic_successor_and_round_trips(tmp_path):
    # 20 items in a cycle; each user walks 8 consecutive steps from a different start.
    # The next item is always current + 1, so a working model ranks the target first.
    n = 20
    catalog = sequences.Catalog(tuple(f"{i:02d}" for i in range(n)))  # index = int(id) + 1
    rows = [np.array([(s + j) % n + 1 for j in range(8)]) for s in range(40)]
    seqs = sequences.from_rows(tuple(f"u{s}" for s in range(40)), rows)
    cfg = seqrec.SeqRecConfig(max_len=8, dim=32, n_layers=1, n_heads=1, dropout=0.0, max_epochs=60,
                              patience=60, batch_size=16, lr=1e-2, eval_k=1)
    result = seqrec.train(seqs, catalog, cfg)
    assert result.test["hr@1"] == 1.0 and result.test["n_users"] == 40
    # Popularity: every item occurs 14 times, so ties go to the lowest unmasked index.
    # Inputs are 7 consecutive (cyclic) indices r+1..r+7, target r+8: that is the lowest
    # unmasked index for r = 0 and r = 13..19 (runs touching index 1): 8 of 20 residues.
    assert result.popularity["hr@1"] == pytest.approx(0.4)
    seqrec.save(result, tmp_path)
    loaded = seqrec.load(tmp_path)
    assert loaded.model_version == result.model_version and loaded.catalog == catalog
    probe = [np.array([3, 4, 5])]
    assert torch.equal(seqrec.score_sequences(result.model, probe), seqrec.score_sequences(loaded.model, probe))
    assert int(seqrec.score_sequences(loaded.model, probe)[0].argmax()) == 6
    assert (tmp_path / seqrec.CARD_FILE).exists()


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the ml/ranker_evaluation asset"):
        seqrec.load(tmp_path)


def test_no_training_transitions_is_a_clear_error():
    seqs = sequences.from_rows(("u1",), [np.array([1, 2, 3])])
    with pytest.raises(ValueError, match="no training transitions"):
        seqrec.train(seqs, CATALOG, seqrec.SeqRecConfig(max_epochs=1))


def test_sampled_softmax_loss_by_hand():
    cfg = seqrec.SeqRecConfig(max_len=4, dim=2, n_layers=1, n_heads=1)
    model = seqrec.SASRec(6, cfg)
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1], [2, 0], [0, 2], [-1, 0]], dtype=torch.float))
    h = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([4])  # item 4 = (2, 0): logit 2
    gen = torch.Generator().manual_seed(0)
    # n_negatives 0 (or a catalog <= 2x n_negatives): full softmax over items 1..6
    full = -2 + math.log(sum(math.exp(v) for v in (1, 0, 1, 2, 0, -1)))
    assert seqrec._loss(model, h, target, 0, gen).item() == pytest.approx(full)
    assert seqrec._loss(model, h, target, 3, gen).item() == pytest.approx(full)
    # sampled: target logit vs the shared negatives; a negative equal to the target is masked
    negs = torch.randint(1, 7, (2,), generator=torch.Generator().manual_seed(0)).tolist()
    weights = model.item_emb.weight.detach()
    logits = [2.0] + [float(weights[n] @ h[0]) for n in negs if n != 4]
    expected = -2 + math.log(sum(math.exp(v) for v in logits))
    assert seqrec._loss(model, h, target, 2, torch.Generator().manual_seed(0)).item() == pytest.approx(expected)


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    seqs = sequences.from_rows(("u",), [np.array([1, 2, 3, 4, 5])])
    seqrec.train(seqs, CATALOG, seqrec.SeqRecConfig(max_len=4, dim=8, n_layers=1, n_heads=1, max_epochs=1, threads=1))
    assert torch.get_num_threads() == before
