"""The pair-inference partitions as a job on Dagster's multiprocess executor (two step
processes at most), at module scope so that `reconstructable` can rebuild it in the
processes it starts (tests/test_pair_partitions.py)."""

from __future__ import annotations

import os

from dagster import Definitions, JobDefinition, define_asset_job, multiprocess_executor

from models_ml import config
from orchestration.assets import llm
from orchestration.keys import asset_key
from orchestration.resources import WarehouseResource


def backfill_job() -> JobDefinition:
    job = define_asset_job(
        "pair_backfill", selection=[asset_key(config.PAIR_INFERENCE_PARTITIONS)],  # partitioned as the asset
        executor_def=multiprocess_executor.configured({"max_concurrent": 2}),
    )
    return Definitions(
        assets=[llm.pair_inference_partitions], jobs=[job],
        resources={"warehouse": WarehouseResource(database=os.environ["DUCKDB_DATABASE"])},
    ).resolve_job_def("pair_backfill")
