"""`recommend --user U --slate-size 10 [--policy explore|baseline|popular]`: one user's
slate with titles and cluster descriptions, and why (history clusters, then the novel
cluster). ``--k`` is kept as an alias of ``--slate-size`` for existing scripts.

Reads the warehouse (DUCKDB_DATABASE) read-only and the trained ranker (IE_MODELS_DIR).
Exit codes: 0 ok, 2 bad input (unknown user, no positive history, bad arguments),
3 missing prerequisites (no warehouse, no trained model, missing or stale tables),
4 the trained ranker does not belong to this warehouse (its model_version is not in
ml.ranker_evaluation), 75 the warehouse stayed locked by a writer (IE_LOCK_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import sys

from models_ml import config
from models_ml import warehouse as wh
from models_ml.items import online
from models_ml.lookup import StaleLookupError, UnknownUserError

EXIT_FOREIGN_MODEL = 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recommend", description=__doc__.split("\n\n")[0])
    p.add_argument("--user", required=True, help="user_id as in raw.interactions")
    p.add_argument("--slate-size", "--k", dest="slate_size", type=int, default=None,
                   help="items in the slate (default IE_SLATE_SIZE or 10); --k is an alias")
    p.add_argument("--policy", choices=config.POLICIES, default="explore")
    return p


def format_recommendation(rec: online.Recommendation) -> str:
    lines = [f"user {rec.user_id} - policy {rec.policy} - model {rec.model_version}", rec.explain(), ""]
    if rec.items.is_empty():
        lines.append("no items: every eligible item was already consumed")
    for rank, item_id, title, cluster_id, desc, score in rec.items.iter_rows():
        lines.append(f'{rank:>3}. {title or item_id} [{item_id}]  cluster: "{desc}" (#{cluster_id})  score {score:.3f}')
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rec = online.recommend(args.user, args.slate_size, args.policy)
    except wh.WarehouseBusyError as exc:
        print(f"recommend: {exc}", file=sys.stderr)
        return wh.EXIT_BUSY
    except online.ForeignModelError as exc:
        print(f"recommend: {exc}", file=sys.stderr)
        return EXIT_FOREIGN_MODEL
    except (UnknownUserError, online.NoPositiveHistoryError, ValueError) as exc:
        # StaleLookupError is a ValueError too, but it is a pipeline state problem.
        code = 3 if isinstance(exc, StaleLookupError) else 2
        print(f"recommend: {exc}", file=sys.stderr)
        return code
    except (FileNotFoundError, LookupError) as exc:
        print(f"recommend: {exc} (warehouse {config.database_path()})", file=sys.stderr)
        return 3
    print(format_recommendation(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
