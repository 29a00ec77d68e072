#!/usr/bin/env bash
# Remote state (issue 8): the same plans run with a local state and with
# `--state s3://…` on moto's S3 server on 127.0.0.1. Shows what a store's
# latency costs a run, and how many journal segments group commit makes.
#
#   benches/remote.sh            (needs moto_server: pip install 'moto[server]')
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cargo build --release --quiet
bin=$PWD/target/release/phoenix
work=$(mktemp -d /tmp/phoenix-remote-bench.XXXXXX)
moto_pid=
trap '[ -n "$moto_pid" ] && kill $moto_pid 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
moto_server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto_pid=$!
wait_port "$port"
curl -s -X PUT "http://127.0.0.1:$port/bench" > /dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export PHOENIX_S3_ENDPOINT=http://127.0.0.1:$port PHOENIX_CACHE_DIR=$work/cache
unset AWS_CA_BUNDLE

python3 benches/gen_plan.py "$work/noop.toml" --layers 10 --width 100
python3 benches/gen_plan.py "$work/cmd.toml" --layers 10 --width 20 --action command
sed -i 's/^concurrency = 2$/concurrency = 8/' "$work/noop.toml" "$work/cmd.toml"
mkdir -p "$work/out"
for plan in noop cmd; do
  for state in "$work/local-$plan" "s3://bench/$plan"; do
    rm -rf "$work/out"/*
    /usr/bin/time -f "%e" -o "$work/t" "$bin" --state "$state" run "$work/$plan.toml" -q
    echo "$plan, state $state: $(cat "$work/t") s"
  done
done
segments=$(python3 - "$port" <<'PY'
import sys, urllib.request, re
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/bench?list-type=2&prefix=noop/runs/&max-keys=100000").read().decode()
print(len(re.findall(r"<Key>[^<]*/journal/\d+\.jsonl</Key>", body)))
PY
)
echo "noop run in S3: $segments journal segments for 1,000 steps"
