"""`python -m orchestration.materialize [--select SELECTION]` (`make materialize`,
`make demo`, `make evaluate`): `dagster asset materialize` for a selection that
holds partitioned assets (the pair inference).

The CLI runs one partition per run and refuses a partitioned asset without
`--partition` (`--select '*'` fails: "Asset has partitions, but no '--partition'
option was provided"). This runs the selection in three steps, each a Dagster run
recorded in DAGSTER_HOME like the CLI's (of the job `all_assets`, every asset): the
assets upstream of the partitioned ones, then one run per partition key (what a
backfill launches), then the rest. Runs execute in this process, one after another; to run the
partitions in parallel or on other machines, launch them as a backfill (README
"Pair inference on several workers").
"""

from __future__ import annotations

import argparse
import sys

from dagster import AssetKey, AssetSelection, DagsterInstance

from orchestration.definitions import all_assets_job, defs


def plan(select: str) -> list[tuple[list[AssetKey], str | None]]:
    """[(asset keys, partition key or None), ...] in run order."""
    graph = defs.resolve_asset_graph()
    selected = AssetSelection.from_coercible(select.split(",")).resolve(graph)
    partitioned = {key for key in selected if graph.get(key).partitions_def is not None}
    if not partitioned:
        return [(sorted(selected), None)]
    defs_of = {graph.get(key).partitions_def for key in partitioned}
    if len(defs_of) != 1:
        raise ValueError(f"the selection holds assets of {len(defs_of)} partitionings; materialize them apart")
    after = AssetSelection.assets(*partitioned).downstream().resolve(graph) & selected - partitioned
    before = selected - partitioned - after
    keys = defs_of.pop().get_partition_keys()
    steps: list[tuple[list[AssetKey], str | None]] = [(sorted(before), None)] if before else []
    steps += [(sorted(partitioned), key) for key in keys]
    if after:
        steps.append((sorted(after), None))
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", default="*", help="a Dagster asset selection (as for dagster asset materialize)")
    args = ap.parse_args(argv)
    steps = plan(args.select)
    job = defs.resolve_job_def(all_assets_job.name)
    with DagsterInstance.get() as instance:
        for keys, partition in steps:
            label = f"{len(keys)} assets" + (f", partition {partition}" if partition is not None else "")
            print(f"materialize: {label}", flush=True)
            result = job.execute_in_process(instance=instance, asset_selection=keys, partition_key=partition,
                                            raise_on_error=False)
            if not result.success:
                print(f"materialize: the run of {label} failed (run {result.run_id})", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
