"""Serving an exported student: `kdexam predict` (onnxruntime, no torch) on an exported BiLSTM and CNN against the
teacher run through a transformers `pipeline`, on the same test texts, in one run.

    python benchmarks/bench_predict.py                      # SmSA, offline teacher, 1,000 train examples
    python benchmarks/bench_predict.py --texts 200 --threads 1 --teacher-dir outputs/core-offline/teacher/smsa/teacher

Two measures, each a ratio to the teacher: throughput (texts/s) of one warm process labelling the texts in
batches of 32, the contenders taking turns for --repeats rounds (median); and cold start, the wall time from
launching a fresh process to its printing the first prediction (`kdexam predict DIR FILE` with one text, and
`python -c` importing transformers, building the pipeline and labelling the same text), median of --starts.
The students are distilled here (the teacher's logits, --epochs), exported with `kdexam export` (whose parity
check against the trained model is printed too) and served with `kdexam predict`'s own code.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import common  # benchmarks/common.py: first, it sets the progress-bar switches
import pandas as pd

from kdlib import data, distill, export, params, predict, rundir
from kdlib.errors import one_line_errors

TEACHER_SCRIPT = """
import sys, torch
torch.set_num_threads({threads})
from transformers import pipeline
pipe = pipeline("text-classification", model={model!r}, device=-1)
print(pipe([open({text!r}, encoding="utf-8").read().strip()], truncation=True, max_length={max_length}))
"""


def students(args, data_dir: Path, teacher_dir: Path) -> dict[str, Path]:
    """BiLSTM and CNN distilled from the teacher's logits, in a study folder, then exported."""
    study = args.scratch / "study"
    exported = {}
    for student in ("bilstm", "cnn"):
        run = study / "distill" / args.dataset / f"{student}-mse-s0"
        if not (run / rundir.METRICS).exists():
            distill.run_distill(params.DistillParams(
                dataset=args.dataset, student=student, teacher_dir=str(teacher_dir),
                                                out_dir=str(run), data_dir=str(data_dir), epochs=args.epochs,
                                                threads=args.threads))
        result = export.export_student(export.ExportParams(study_dir=str(study), dataset=args.dataset,
                                                           student=student, out_dir=str(args.scratch / student),
                                                           data_dir=str(data_dir)))
        parity = result.info["parity"]
        print(f"{student}: export labels {100 * parity['onnx']['agreement']:.2f}% of {parity['onnx']['units']} test "
              f"units as the trained model (int8 {100 * parity['int8']['agreement']:.2f}%); test F1 trained "
              f"{100 * parity['f1_trained']:.2f}, onnx {100 * parity['onnx']['f1']:.2f}, int8 "
              f"{100 * parity['int8']['f1']:.2f} ({100 * parity['int8_f1_change']:+.2f})")
        exported[student] = result.out_dir
    return exported


def throughput(fns: dict, texts: list[str], repeats: int) -> dict[str, float]:
    """Texts/s of each function on all the texts, after one warm-up call; turns rotate round by round."""
    for fn in fns.values():
        fn(texts[:32])
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            started = time.perf_counter()
            fns[name](texts)
            seconds[name].append(time.perf_counter() - started)
    return {name: len(texts) / statistics.median(s) for name, s in seconds.items()}


def cold_start(cmd: list[str], starts: int) -> float:
    """Median seconds from launching `cmd` to its exit after printing its one prediction."""
    times = []
    for _ in range(starts):
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:3])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return statistics.median(times)


@one_line_errors
def main() -> None:
    p = common.arguments(__doc__.split("\n\n")[0], train=1000, epochs=2)
    p.add_argument("--texts", type=int, default=500, help="test texts labelled per round (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="throughput rounds (default: %(default)s)")
    p.add_argument("--starts", type=int, default=3, help="cold starts per contender (default: %(default)s)")
    args = common.settle(p.parse_args(), "bench_predict")
    args.texts = min(args.texts, 64) if args.tiny else args.texts
    data_dir, teacher_dir = common.prepare(args)
    exported = students(args, data_dir, teacher_dir)
    texts = [r["text"] for r in data.read_records(data.get_spec(args.dataset), "test", data_dir)][:args.texts]
    texts = (texts * (1 + args.texts // len(texts)))[:args.texts]

    from transformers import pipeline

    max_length = rundir.read_json(teacher_dir / rundir.TEACHER_INFO)["max_length"]
    pipe = pipeline("text-classification", model=str(teacher_dir / "model"), device=-1)
    fns = {name: predict.Predictor(folder, threads=args.threads).predict for name, folder in exported.items()}
    fns["teacher"] = lambda xs: pipe(xs, batch_size=32, truncation=True, max_length=max_length)
    speed = throughput(fns, texts, args.repeats)

    one = args.scratch / "one.txt"
    one.write_text(texts[0] + "\n", encoding="utf-8")
    kdexam = Path(sys.executable).with_name("kdexam")
    starts = {name: cold_start([str(kdexam), "predict", str(folder), str(one), "--threads", str(args.threads)],
                               args.starts) for name, folder in exported.items()}
    script = TEACHER_SCRIPT.format(threads=args.threads, model=str(teacher_dir / "model"), text=str(one),
                                   max_length=max_length)
    starts["teacher"] = cold_start([sys.executable, "-c", script], args.starts)

    rows = [{"contender": "teacher (transformers pipeline)" if name == "teacher" else f"{name} (kdexam predict)",
             "texts/s": speed[name], "× teacher texts/s": speed[name] / speed["teacher"],
             "cold start s": starts[name], "× faster cold start": starts["teacher"] / starts[name]}
            for name in (*exported, "teacher")]
    pooling = rundir.read_json(teacher_dir / rundir.TEACHER_INFO).get("pooling", "cls")
    print(f"\nbench_predict: {args.dataset}, {len(texts)} test texts in batches of 32, {args.threads} thread(s), "
          f"{args.repeats} rounds (median), {args.starts} cold starts (median); teacher {args.teacher} "
          f"({pooling} pooling{'; the pipeline runs the HF head, the same cost' if pooling == 'mean' else ''})")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.2f}"))


if __name__ == "__main__":
    main()
