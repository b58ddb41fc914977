#!/usr/bin/env python3
"""A/B comparison of `batchnorm bench` between builds, for kernel work on a noisy machine.

Runs each binary's `bench --json` in turn, round after round, so that every binary sees
the same phases of the machine, and prints per row (shape, layout, op) the median and the
least of each binary's ratio to the copy over the rounds. Extra arguments go to `bench`.

    cp target/release/batchnorm /tmp/bn-before   # then rebuild with the change
    python3 scripts/ab_bench.py /tmp/bn-before target/release/batchnorm --rounds 6 \
        -- --shape 4096x1024 --layout channels-first
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binaries", nargs="+", help="batchnorm binaries to compare")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    parser.add_argument("--budget-ms", type=int, default=200, help="bench time per op (default 200)")
    args, bench_args = parser.parse_known_args()
    bench_args = [a for a in bench_args if a != "--"]
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for b in args.binaries:
        if not os.access(b, os.X_OK):
            parser.error(f"{b}: not an executable file")

    ratios = collections.defaultdict(lambda: collections.defaultdict(list))
    order = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.jsonl")
        for r in range(args.rounds):
            for b in args.binaries:
                cmd = [b, "bench", "--budget-ms", str(args.budget_ms), "--json", out, *bench_args]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr}")
                with open(out) as f:
                    for line in f:
                        row = json.loads(line)
                        key = (row["shape"], row["layout"], row["op"])
                        if key not in ratios:
                            order.append(key)
                        ratios[key][b].append(row["ratio_to_copy"])
            print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)

    names = [os.path.basename(b) if len(set(map(os.path.basename, args.binaries))) == len(args.binaries) else b
             for b in args.binaries]
    for key in order:
        cells = []
        for b, name in zip(args.binaries, names):
            v = ratios[key][b]
            cells.append(f"{name}: median {statistics.median(v):.2f} least {min(v):.2f}")
        print(f"{key[0]:<14} {key[1]:<15} {key[2]:<17} " + " | ".join(cells))


if __name__ == "__main__":
    main()
