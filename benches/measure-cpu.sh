#!/usr/bin/env bash
# Measures the CPU numbers the README quotes, in one run on this machine (ratios only mean
# something within one run): `bench ops` (1 and 2 threads) beside SEAL on the same chains,
# `bench model` for the embedded cryptonets (n8192) and cryptodl (n16384), process CPU and system
# time, and the encrypted accuracy on the whole Fashion-MNIST test set for both models.
#   bash benches/measure-cpu.sh [OUT_DIR]     (default benches/results/cpu-<host>-<date>)
# Needs: a release build (cargo build --release), dataset-fashion-mnist, and for the SEAL rows
# `pip install tenseal` (it bundles SEAL; skipped with a note if missing).
set -uo pipefail
cd "$(dirname "$0")/.."
B=target/release/cryptodl
OUT=${1:-benches/results/cpu-$(hostname -s)-$(date +%Y%m%d)}
mkdir -p "$OUT"
run() { # run NAME COMMAND...: stdout to NAME.json, /usr/bin/time to NAME.time
  local name=$1; shift
  echo "== $name: $*" >&2
  /usr/bin/time -v -o "$OUT/$name.time" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || echo "   failed (see $OUT/$name.err)" >&2
}
lscpu | grep -E "Model name|^CPU\(s\)" >"$OUT/machine.txt"
for preset in n8192 n16384; do
  for t in 1 2; do run "ops-$preset-t$t" $B bench ops --preset $preset --threads $t --json; done
  if python3 -c "import tenseal" 2>/dev/null; then
    run "seal-$preset" python3 benches/seal/seal_ops.py --preset $preset
  else
    echo "   SEAL rows skipped: pip install tenseal" >&2
  fi
done
run model-cryptonets-t2 $B bench model --threads 2 --batches 3 --json
run model-cryptonets-t1 $B bench model --threads 1 --batches 2 --json
run model-cryptodl-t2 $B bench model --model models/cryptodl-poly2.safetensors --preset n16384 --threads 2 --batches 2 --json
run infer-cryptonets $B infer --model models/cryptonets-poly2.safetensors --limit 10000 --json
run infer-cryptodl $B infer --model models/cryptodl-poly2.safetensors --preset n16384 --limit 10000 --json
run demo $B demo --json
echo "results in $OUT" >&2
