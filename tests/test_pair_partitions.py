"""Pair inference as Dagster partitions, on the tiny random Llama of test_llm_model: a
backfill of every partition (one run per partition key, two at a time, each step in a
process of Dagster's multiprocess executor) staged as Parquet files, unioned by the
unpartitioned asset into ml.novel_interest_transitions, gives the same table as one
loop over every history; a missing, corrupt or incomplete partition file fails the
union, naming the file, and the previous table stays."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, execute_job, materialize, reconstructable

from models_ml import config
from models_ml import warehouse as wh
from models_ml.llm import finetune as ft
from models_ml.llm import pairs, pipeline
from orchestration import runs
from orchestration.assets import llm
from orchestration.keys import asset_key
from orchestration.resources import WarehouseResource
from tests import partition_jobs
from tests.test_llm_model import (  # noqa: F401  (fixtures and the skip mark)
    one_thread,
    pytestmark,
    smol_dir,
    synthetic_warehouse,
    tiny_dir,
    tokenizer,
)

M = 3  # 5 clusters - 2 in the history
NIT_KEY = asset_key(config.NOVEL_INTEREST_TRANSITIONS)


def test_partitions_take_shards_by_first_cluster_modulo_n():
    hist = pairs.all_histories(range(5), 2)
    assert [pairs.partition_shards(hist, 2, p, 4) for p in range(4)] == [[0, 4], [1], [2], [3]]
    assert [pairs.partition_shards(hist, 2, p, 3) for p in range(3)] == [[0, 3], [1, 4], [2]]
    assert pairs.partition_shards(hist, 2, 5, 8) == []  # more partitions than shards: an empty one
    with pytest.raises(ValueError, match="outside 0..3"):
        pairs.partition_shards(hist, 2, 4, 4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_dir):  # noqa: F811
    tmp = tmp_path_factory.mktemp("pair_partitions")
    db = tmp / "wh.duckdb"
    mp = pytest.MonkeyPatch()
    # inherited by the executor's step processes
    mp.setenv("DUCKDB_DATABASE", str(db))
    mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(config.REPO_ROOT), os.environ.get("PYTHONPATH")])))
    mp.setenv("IE_BASE_MODEL", str(tiny_dir))
    mp.setenv("IE_MODELS_DIR", str(tmp / "models"))
    mp.setenv("IE_LLM_MECHANISM", "none")  # the model's own rows ship: the union is the table
    # a random 2-layer model fails the real refresh gate (tests/test_refresh_gates.py covers it)
    mp.setenv("IE_GATE_MATCH_RATE", "0")
    mp.setenv("IE_GATE_RECALL_MARGIN", "-1")
    synthetic_warehouse(db)
    with wh.connect(db) as con:  # no validation fold here, so the counts are never read
        con.execute(f"create table {config.SUCCESSOR_COUNTS} (level int, k int, context varchar, history int[], "
                    "next_cluster_id int, n_train bigint, n_fit bigint)")
        inputs = pipeline.read_inputs(con, 2, 2)
    cfg = ft.FinetuneConfig(steps=2, batch_histories=4, eval_every=2, eval_histories=4, eval_prompts=4, top_m=M)
    result = pipeline.run_finetune(inputs, cfg, progress=False)
    adapter = pipeline.current_adapter_dir()
    # today's single loop over every history, then its resume files go, so the
    # partitions compute their shards themselves
    single, _ = pipeline.run_pair_inference(adapter, inputs.descriptions, 2, 2, M, progress=False,
                                            histories=pipeline.lookup_histories(inputs))
    shutil.rmtree(adapter / "pairs")
    (tmp / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(str(tmp / "dagster_home"))
    yield {"db": db, "instance": instance, "single": single, "version": result.model_version,
           "folder": pipeline.staged_folder(2, 2)}
    instance.dispose()
    mp.undo()


def run_partition(ref, key: str) -> str:
    with DagsterInstance.from_ref(ref) as instance:
        result = execute_job(reconstructable(partition_jobs.backfill_job), instance=instance,
                             tags={"dagster/partition": key})
        assert result.success, key
        return result.run_id


def union(setup, raise_on_error: bool = True):
    return materialize([llm.pair_inference_partitions, llm.novel_interest_transitions], selection=[NIT_KEY],
                       resources={"warehouse": WarehouseResource(database=str(setup["db"]))},
                       instance=setup["instance"], raise_on_error=raise_on_error)


def lookup_table(db: Path) -> pl.DataFrame:
    with wh.connect(db, read_only=True) as con:
        return wh.read_table(con, config.NOVEL_INTEREST_TRANSITIONS).sort("history", "rank")


@pytest.fixture(scope="module")
def backfilled(setup):
    keys = llm.PAIR_PARTITIONS.get_partition_keys()
    with ThreadPoolExecutor(max_workers=2) as pool:  # two runs at a time, as a backfill launches them
        run_ids = list(pool.map(lambda key: run_partition(setup["instance"].get_ref(), key), keys))
    union(setup)
    return run_ids


def test_backfill_on_two_processes_equals_the_single_loop(setup, backfilled):
    assert llm.PAIR_PARTITIONS.get_partition_keys() == ["0", "1", "2", "3"]  # IE_LLM_PARTITIONS default
    # each partition's step ran in its own process, none in this one
    pids = set()
    for run_id in backfilled:
        starts = setup["instance"].all_logs(run_id, of_type=DagsterEventType.STEP_START)
        assert len(starts) == 1
        pids.add(starts[0].dagster_event.pid)
    assert len(pids) == 4 and os.getpid() not in pids
    # each run is tagged with its orchestrating process (this one), not its step's, which
    # ends first: a concurrent run's start must not take it for a killed run
    for run_id in backfilled:
        run = setup["instance"].get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.SUCCESS
        assert run.tags[runs.PID_TAG].split(":")[1] == str(os.getpid())
    # partition 0 holds shards 0 and 4: 2 x 4 histories x 3 ranks; the others one shard
    sizes = [pl.read_parquet(pairs.staged_path(setup["folder"], p)).height for p in range(4)]
    assert sizes == [24, 12, 12, 12]
    table = lookup_table(setup["db"])
    # the single loop's rows, their version ending with the digest of what they rank
    single = setup["single"].sort("history", "rank")
    assert table.height == 20 * M
    assert set(table["model_version"]) == {setup["version"] + pairs.ROWS_TAG + pairs.rows_digest(single)}
    assert table.drop("model_version").equals(single.drop("model_version"))


def failure(result) -> str:
    events = [e for e in result.all_events if e.is_step_failure]
    assert len(events) == 1
    return events[0].step_failure_data.error.to_string()


def test_missing_or_corrupt_partition_file_fails_the_union_naming_it(setup, backfilled):
    before = lookup_table(setup["db"])
    folder = setup["folder"]

    def broken(partition: int, content: bytes | None, expect: str) -> None:
        path = pairs.staged_path(folder, partition)
        saved = path.read_bytes()
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        result = union(setup, raise_on_error=False)
        path.write_bytes(saved)
        assert not result.success
        message = failure(result)
        assert f"{path} (partition {partition} of 4)" in message and expect in message, message
        assert lookup_table(setup["db"]).equals(before)  # the previous table stays

    broken(2, None, "is missing")
    broken(1, b"PAR1 truncated", "is corrupt")
    twice = pl.read_parquet(pairs.staged_path(folder, 3))
    broken(3, _parquet(pl.concat([twice, twice])), "4 without ranks 1..3 exactly once")
    other = twice.with_columns(pl.lit("another-model").alias("model_version"))
    broken(3, _parquet(other), "written by model ['another-model']")
    assert union(setup).success
    assert lookup_table(setup["db"]).equals(before)


def _parquet(df: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    df.write_parquet(buf)
    return buf.getvalue()
