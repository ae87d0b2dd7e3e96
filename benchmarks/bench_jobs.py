"""`flatnb run --jobs`: wall time of the README's main job (`flatnb run gmix --preset cpu`) trained one run at a time
against two at once in worker processes, one thread per run either way (so both compute the same numbers).

A round runs a subset of the main job (`--arms`, `--seeds`; every run as the preset trains it, Hessian metric included)
with `--jobs 1` and with `--jobs 2`, in alternating order, each into a fresh folder; the median round times are
compared. The target on 2 cores is a speed-up >= 1.6. It writes `benchmarks/results/jobs.md`. A plan's fixed costs
(starting, loading the data, checking every arm; each worker importing torch) are paid once, so the speed-up grows
with the number of runs: 1.52x for 6 runs, 1.72x for 18 (2026-12-04, this benchmark); the main job has 100.

    python benchmarks/bench_jobs.py                       # 2 rounds of the 6 main arms x 3 seeds (18 runs)
    python benchmarks/bench_jobs.py --arms vanilla --seeds 2 --rounds 1
"""
import argparse, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path
from flatnb.experiment import cpu_cores

def wall(jobs, arms, seeds, out):
    t = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'flatnb', 'run', 'gmix', '--preset', 'cpu', '--arms', arms, '--seeds', str(seeds),
                    '--jobs', str(jobs), '--no-progress', '--out', str(out)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--arms', default='vanilla,sam,mixup,gmix,bgmix,dgmix'); p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--out', default=Path(__file__).parent/'results'/'jobs.md')
    a = p.parse_args()
    times = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            for jobs in ((1, 2) if r % 2 == 0 else (2, 1)):
                times[jobs].append(wall(jobs, a.arms, a.seeds, Path(d)/f'{r}-{jobs}'))
                print(f"round {r + 1}, --jobs {jobs}: {times[jobs][-1]:.1f}s", flush=True)
    med = {j: statistics.median(t) for j, t in times.items()}
    cores = cpu_cores()
    n = len(a.arms.split(',')) * a.seeds
    md = (f"# `flatnb run --jobs`: the main job's runs one at a time and two at once\n\n"
          f"`flatnb run gmix --preset cpu --arms {a.arms} --seeds {a.seeds}` ({n} runs, one thread each), "
          f"median of {a.rounds} interleaved rounds, on {cores} cores ({platform.processor() or platform.machine()}), "
          f"by `benchmarks/bench_jobs.py`.\n\n| | wall time (s) | speed-up |\n|---|---|---|\n"
          f"| `--jobs 1` | {med[1]:.1f} | 1.00× |\n| `--jobs 2` | {med[2]:.1f} | {med[1] / med[2]:.2f}× |\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(md); print(md)

if __name__ == '__main__': main()
