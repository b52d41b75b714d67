"""The small demo configuration the whole-job tests build (tests/conftest.py's
``small_demo``, checked by test_pipeline and shown by test_browser), and how they
materialize it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from models_ml import config

REPO = config.REPO_ROOT
FOUNDATION = "group:ingestion or group:clusters or group:warehouse"
FINE_CLUSTERS = 12


def small_demo_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DUCKDB_DATABASE=str(tmp / "demo.duckdb"),
        DAGSTER_HOME=str(tmp / "dagster_home"),
        IE_MODELS_DIR=str(tmp / "models"),
        IE_REPORTS_DIR=str(tmp / "reports"),
        IE_SOURCE="demo",
        IE_DEMO_USERS="150",
        IE_DEMO_ITEMS="240",
        IE_DEMO_EVENTS="12000",
        IE_FINE_CLUSTERS=str(FINE_CLUSTERS),
        IE_COARSE_CLUSTERS="4",
        # The real SmolLM2 (converted once, shared cache) with a few LoRA steps: enough to
        # run every stage, not to learn; the demo's figures come from `make demo`.
        IE_BASE_MODEL=str(base_model_dir()),
        IE_LLM_STEPS="4",
        IE_LLM_BATCH="4",
        IE_LLM_EVAL_EVERY="2",
        IE_SEQREC_EPOCHS="2",
        # 4 LoRA steps and 2 epochs are not meant to pass the refresh gates (they get
        # their own test, test_refresh_gates.py): the rules off, every stage still runs.
        IE_GATE_MATCH_RATE="0",
        IE_GATE_RECALL_MARGIN="-1",
        IE_GATE_NDCG_MARGIN="-1",
    )
    (tmp / "dagster_home").mkdir()
    return env


def base_model_dir() -> Path:
    from models_ml.llm import base

    return base.convert_gguf()  # converted once into the shared base-model cache


def materialize(env: dict[str, str], select: str) -> subprocess.CompletedProcess:
    dagster = Path(sys.executable).with_name("dagster")
    # the CLI cannot take partitioned assets without --partition: `make demo`'s helper can
    cmd = ([sys.executable, "-m", "orchestration.materialize", "--select", select] if select == "*" else
           [str(dagster), "asset", "materialize", "-m", "orchestration", "--select", select])
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
