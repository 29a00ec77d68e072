#!/usr/bin/env bash
# Restore throughput (issue 4): a 1 GiB object on a local s3s-fs server,
# uploaded through the API, fetched by `aws s3 cp`, `rclone copyto` and a
# phoenix restore step with SHA-256 verification, in the same run. Prints wall
# time, throughput, CPU seconds per GiB and peak memory of each.
#
#   benches/restore.sh [SIZE_MIB]        (default 1024)
#
# Needs: s3s-fs (cargo install s3s-fs --version '~0.14' --features binary),
# awscli (pip install awscli), rclone (apt-get install rclone).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
size_mib=${1:-1024}
cargo build --release --quiet
phoenix=$PWD/target/release/phoenix
work=$(mktemp -d /tmp/phoenix-restore-bench.XXXXXX)
s3s_pid=
trap '[ -n "$s3s_pid" ] && kill $s3s_pid 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
mkdir -p "$work/s3"
s3s-fs --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" > "$work/s3s.log" 2>&1 &
s3s_pid=$!
endpoint=http://127.0.0.1:$port
wait_port "$port"
awsbin=$(command -v aws)
aws() { "$awsbin" --endpoint-url "$endpoint" "$@"; }
aws s3 mb s3://bench >/dev/null
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/object"
digest=$(sha256sum "$work/object" | cut -d' ' -f1)
aws s3 cp "$work/object" s3://bench/obj.bin --quiet
echo "$digest  obj.bin" > "$work/obj.bin.sha256"
aws s3 cp "$work/obj.bin.sha256" s3://bench/obj.bin.sha256 --quiet
rm "$work/object"

measure() {
  local name=$1; shift
  rm -f "$work/out"
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" > /dev/null 2>"$work/err" || { cat "$work/err"; return 1; }
  read -r wall user sys rss < <(tail -1 "$work/time")
  python3 -c "
size = $size_mib / 1024
print(f'{\"$name\":<16} {$wall:6.2f} s  {$size_mib / $wall:7.1f} MiB/s  {($user + $sys) / size:5.2f} CPU s/GiB  {$rss / 1024:6.1f} MB peak')"
}

cat > "$work/plan.toml" <<PLAN
version = 1
[plan]
name = "bench"
rto = "1h"
rpo = "1h"
[stores.s3]
type = "s3"
bucket = "bench"
endpoint = "$endpoint"
path_style = true
[[step]]
id = "get"
phase = "restore"
action = "restore"
store = "s3"
key = "obj.bin"
dest = "$work/out"
timeout = "10m"
PLAN

measure "aws s3 cp" "$awsbin" --endpoint-url "$endpoint" s3 cp s3://bench/obj.bin "$work/out" --quiet
if command -v rclone >/dev/null; then
  export RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other RCLONE_CONFIG_B_ENDPOINT=$endpoint
  export RCLONE_CONFIG_B_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_B_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
  # A CA bundle set for the AWS SDKs makes rclone refuse plain-http endpoints.
  measure "rclone copyto" env -u AWS_CA_BUNDLE rclone copyto B:bench/obj.bin "$work/out"
fi
rm -rf "$work/state"
measure "phoenix restore" "$phoenix" --state "$work/state" run "$work/plan.toml" -q
[ "$(sha256sum "$work/out" | cut -d' ' -f1)" = "$digest" ] && echo "phoenix: digest verified"
