"""The study runner on a small matrix: 1 vs 2 workers, on a local pool and on a Dask cluster (a LocalCluster here).

    python benchmarks/bench_runner.py                     # 2 datasets x (teacher + 2 students x 2 variants) = 10 runs

Each configuration runs the whole matrix from an empty output folder with the real notebooks (papermill), so the
wall time includes what a user waits for: kernels starting, imports, data loading, training, scoring. Runs are
tiny (capped train sets, one epoch), which makes per-run overhead weigh more than in a real study.
"""
from __future__ import annotations

import argparse
import shutil
import textwrap
import time
from pathlib import Path

from kdlib import config, data, runner
from kdlib.errors import one_line_errors

REPO = Path(__file__).resolve().parents[1]
STUDY = """
study: bench-runner
output_dir: {out}
datasets: {datasets}
teacher: {{base_model: tiny-random, epochs: 1, lr: 0.001, max_length: 64, max_train_examples: {train}}}
distill:
  students: [bilstm, cnn]
  variants: [mse, ce]
  epochs: 1
  max_train_examples: {train}
  student_options: {{bilstm: {{emb_dim: 32, hidden: 32}}, cnn: {{emb_dim: 32, filters: 16}}}}
"""


def run_matrix(study_file: Path, data_dir: str, out: Path, **where) -> tuple[float, runner.Summary]:
    shutil.rmtree(out, ignore_errors=True)
    runs = runner.plan(config.load_params(study_file), data_dir=data_dir)
    started = time.perf_counter()
    summary = runner.execute(runs, echo=lambda line: None, **where)
    return time.perf_counter() - started, summary


@one_line_errors
def main() -> None:
    from distributed import LocalCluster

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="IndoNLU data (default: $KDEXAM_DATA_DIR or data/indonlu)")
    p.add_argument("--datasets", nargs="+", default=["smsa", "emot"])
    p.add_argument("--train", type=int, default=200, help="train examples per run (default: %(default)s)")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--work", default=str(REPO / "outputs" / "benchmarks" / "runner"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = str(data.resolve_data_dir(args.data_dir))
    rows, n_runs = [], 0
    for executor in ("local", "dask"):
        for workers in args.workers:
            out = work / f"{executor}-{workers}"
            study_file = work / f"{executor}-{workers}.yaml"
            study_file.write_text(textwrap.dedent(STUDY.format(out=out, datasets=list(args.datasets),
                                                               train=args.train)))
            if executor == "local":
                seconds, summary = run_matrix(study_file, data_dir, out, jobs=workers)
            else:
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
                    seconds, summary = run_matrix(study_file, data_dir, out, scheduler=cluster.scheduler_address)
            n_runs = len(summary.done) + len(summary.failed) + len(summary.blocked)
            rows.append({"executor": executor, "workers": workers, "runs done": len(summary.done),
                         "failed": len(summary.failed), "wall s": round(seconds, 1)})
    base = {r["executor"]: r["wall s"] for r in rows if r["workers"] == min(args.workers)}
    for row in rows:
        row["speed-up vs 1 worker"] = f"{base[row['executor']] / row['wall s']:.2f}x"
    import pandas as pd

    print(f"\nbench_runner: {n_runs} runs ({', '.join(args.datasets)}: teacher + bilstm/cnn x mse/no-kd), "
          f"{args.train} train examples per run, 1 epoch, tiny-random teacher; each configuration from scratch")
    print(pd.DataFrame(rows).to_string(index=False))
    print("  dask: the same runner.execute sent to a distributed.LocalCluster through its scheduler address, as "
          "`kdexam run --executor dask --scheduler ADDRESS` does")


if __name__ == "__main__":
    main()
