#!/usr/bin/env bash
# TCP echo at 100 connections, 1 KiB, thread-per-connection servers, stdlib vs rsock (same code), with the
# server pinned to CPU 0 and the load generator to CPU 1 (--pin), 30 interleaved reps of 2 s windows.
# Built from commit e3a4ffc (make build-dev). Run from /work/shared/bench (the harness, unmodified).
set -euo pipefail
OUT=/work/main/benchmarks/results/confirm-c100-pinned-20261126
R="{python} /work/main/benchmarks/as_rsock.py {here}/peers.py"
cd /work/shared/bench
python3 echo_bench.py --reps 30 --retries 2 --pin --duration 2 --servers threads,socketserver \
  --server "rsock-threads=$R tcp threads --host {host} --port {port}" \
  --server "rsock-socketserver=$R tcp socketserver --host {host} --port {port}" \
  --baseline threads,socketserver --sizes 1K --concurrency 100 --out $OUT/echo-c100-pinned.json > $OUT/echo-c100-pinned.md
