#!/usr/bin/env bash
# The end-to-end drill: a real PostgreSQL rebuilt from a real backup in a real
# S3 server (moto's, on 127.0.0.1).
#
#  1. start moto; make a populated database, pg_dump -Fc it, upload the dump
#     with its .sha256 sidecar and the figures (row count, checksum) beside it;
#  2. run plans/postgres.toml as a drill; check its report: succeeded, RTO and
#     RPO met, the restored rows equal to the backup's;
#  3. run it again with chaos `kill`, its state in S3 (`--state s3://…`), and
#     resume until done, each resume from a fresh cache directory (another
#     "machine" with only the URL); check the data again;
#  4. `phoenix backups` passes; with the clock moved past the RPO, it fails;
#  5. stop everything it started.
#
# Installs PostgreSQL, moto and faketime when missing (Debian packages, PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
root=$PWD

need_apt=()
command -v initdb >/dev/null || [ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql)
command -v faketime >/dev/null || need_apt+=(faketime)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for dir in /usr/lib/postgresql/*/bin; do PATH="$PATH:$dir"; done
command -v moto_server >/dev/null || python3 -m pip install --quiet 'moto[server]'
cargo build --quiet
phoenix="$root/target/debug/phoenix"

work=$(mktemp -d /tmp/phoenix-e2e.XXXXXX)
chmod 0755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -d "$work/source/data" ]; then as_pg pg_ctl --pgdata="$work/source/data" --mode=immediate stop >/dev/null 2>&1 || true; fi
  for cluster in cluster cluster-again; do
    if [ -d "$work/$cluster/data" ]; then as_pg pg_ctl --pgdata="$work/$cluster/data" --mode=immediate stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "e2e: FAIL: $*" >&2; exit 1; }

step "S3 server"
s3_port=$(free_port)
moto_server -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e AWS_REGION=us-east-1
endpoint="http://127.0.0.1:$s3_port"
wait_port "$s3_port"

step "a real backup"
src_port=$(free_port)
mkdir -p "$work/source"; [ "$(id -u)" = 0 ] && chown postgres "$work/source"
as_pg initdb --pgdata="$work/source/data" --username=postgres --auth=trust --no-sync >/dev/null
as_pg pg_ctl --pgdata="$work/source/data" --log="$work/source/log" -o "-p $src_port -k $work/source -c listen_addresses=127.0.0.1" --wait start >/dev/null
psql -h 127.0.0.1 -p "$src_port" -U postgres -qc "create role app login" -c "create database shop owner app"
psql -h 127.0.0.1 -p "$src_port" -U postgres -d shop -q -v ON_ERROR_STOP=1 <<'SQL'
create table customers (id int primary key, name text not null, plan text not null);
insert into customers select g, 'customer ' || g, (array['free','pro','team'])[1 + g % 3] from generate_series(1, 5000) g;
alter table customers owner to app;
SQL
rows=$(psql -h 127.0.0.1 -p "$src_port" -U postgres -d shop -tAc 'select count(*) from customers')
checksum=$(psql -h 127.0.0.1 -p "$src_port" -U postgres -d shop -tAc "select md5(string_agg(id || ':' || name || ':' || plan, ',' order by id)) from customers")
key="dumps/shop-$(date -u +%Y%m%dT%H%M%SZ).dump"
pg_dump -h 127.0.0.1 -p "$src_port" -U postgres -Fc shop > "$work/shop.dump"
printf 'rows=%s\nchecksum=%s\n' "$rows" "$checksum" > "$work/figures"
as_pg pg_ctl --pgdata="$work/source/data" --mode=fast --wait stop >/dev/null
python3 - "$endpoint" "$key" "$work/shop.dump" "$work/figures" <<'PY'
import boto3, hashlib, sys
endpoint, key, dump, figures = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
s3.create_bucket(Bucket="pg-backups")
for name, path in ((key, dump), (key + ".figures", figures)):
    data = open(path, "rb").read()
    s3.put_object(Bucket="pg-backups", Key="shop/" + name, Body=data)
    s3.put_object(Bucket="pg-backups", Key="shop/" + name + ".sha256",
                  Body=(hashlib.sha256(data).hexdigest() + "  " + name.split("/")[-1] + "\n").encode())
print("uploaded", key, len(open(dump, "rb").read()), "bytes")
PY

vars=(--var "port=$(free_port)" --var "s3_endpoint=$endpoint" --var "cluster_dir=$work/cluster")
export PG_APP_PASSWORD="e2e-secret-$RANDOM$RANDOM"

check_report() {
  local state=$1
  "$phoenix" --state "$state" report --format json > "$work/report.json"
  python3 - "$work/report.json" "$rows" "$PG_APP_PASSWORD" <<'PY' || fail "report check"
import json, sys
report = json.load(open(sys.argv[1])); rows = sys.argv[2]; secret = sys.argv[3]
assert report["result"] == "succeeded", report["result"]
assert report["rto"]["met"] is True, report["rto"]
assert report["rpo"]["met"] is True, report["rpo"]
verify = next(s for s in report["steps"] if s["id"] == "verify")
assert verify["outputs"]["rows"] == rows, (verify["outputs"], rows)
assert secret not in open(sys.argv[1]).read()
print(f"report ok: rto {report['rto']['actual_seconds']:.1f}s of {report['rto']['target_seconds']:.0f}s, "
      f"rpo {report['rpo']['actual_seconds']:.0f}s of {report['rpo']['target_seconds']:.0f}s, {rows} rows")
PY
  if [ -d "$state" ] && grep -rq "$PG_APP_PASSWORD" "$state"; then fail "the secret reached the state"; fi
}

step "validate and drill"
"$phoenix" validate plans/postgres.toml
"$phoenix" --state "$work/state1" run plans/postgres.toml --drill "${vars[@]}"
check_report "$work/state1"

step "drill with chaos kill, state in S3, resumed from another machine until done"
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('$endpoint/e2e-state', method='PUT'))"
state2=s3://e2e-state/chaos
export PHOENIX_S3_ENDPOINT=$endpoint PHOENIX_LEASE=2s
code=0
PHOENIX_CACHE_DIR=$work/cache-0 "$phoenix" --state "$state2" run plans/postgres.toml --drill --chaos kill=0.35,seed=11 "${vars[@]}" || code=$?
kills=0
while [ "$code" -ne 0 ]; do
  case $code in
    134) kills=$((kills + 1)) ;;  # a chaos kill: the next "machine" resumes
    4) sleep 0.5 ;;               # the killed run's lease has not expired yet
    *) fail "the chaos drill stopped with exit $code" ;;
  esac
  [ "$kills" -lt 30 ] || fail "the chaos drill did not converge"
  code=0
  PHOENIX_CACHE_DIR=$work/cache-$kills "$phoenix" --state "$state2" resume || code=$?
done
echo "converged after $kills crashes, resumed from $kills other cache directories"
PHOENIX_CACHE_DIR=$work/cache-report check_report "$state2"
python3 - "$endpoint" "$PG_APP_PASSWORD" <<'PY' || fail "the secret reached the remote state"
import sys, boto3  # boto3 comes with moto
endpoint, secret = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=endpoint)
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="e2e-state")
        for o in page.get("Contents", [])]
assert any("/journal/" in k for k in keys), keys
for key in keys:
    body = s3.get_object(Bucket="e2e-state", Key=key)["Body"].read().decode(errors="replace")
    assert secret not in body, key
print(f"remote state ok: {len(keys)} objects, no secret in any")
PY
if grep -rq "$PG_APP_PASSWORD" "$work"/cache-*; then fail "the secret reached a state cache"; fi
unset PHOENIX_S3_ENDPOINT PHOENIX_LEASE

step "every step safe to run again after a crash"
# A crash leaves the steps that were running in doubt, and the resume runs
# them again over what their first run did: each step in turn (the last
# first, before anything it needs is made anew), the others done. Not
# `cluster`: in doubt, nothing after it has run, which is a first run again;
# run again here, it would wipe the data of the server `start` runs on it.
state3=$work/state-again
"$phoenix" --state "$state3" run plans/postgres.toml -q --var "port=$(free_port)" \
  --var "s3_endpoint=$endpoint" --var "cluster_dir=$work/cluster-again"
journal=$(echo "$state3"/runs/*/journal.jsonl)
steps=$("$phoenix" --state "$state3" status --format json | python3 -c \
  'import json, sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["steps"] if s["state"] == "succeeded"))')
for s in $(printf '%s\n' $steps | tac | grep -vx cluster); do
  python3 - "$journal" "$s" <<'PY'
import json, sys
path, step = sys.argv[1:]
def kept(line):
    record = json.loads(line)
    return record["type"] != "ended" and not (record["type"] == "finished" and record.get("step") == step)
lines = [line for line in open(path).read().splitlines() if kept(line)]
open(path, "w").write("".join(line + "\n" for line in lines))
PY
  "$phoenix" --state "$state3" resume -q || fail "step $s failed when run again"
done
[ "$("$phoenix" --state "$state3" status --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])')" = succeeded ] \
  || fail "the run did not end succeeded"
echo "ran again one at a time: $(printf '%s\n' $steps | tac | grep -vx cluster | tr '\n' ' ')"
as_pg pg_ctl --pgdata="$work/cluster-again/data" --mode=fast --wait stop >/dev/null
if grep -rq "$PG_APP_PASSWORD" "$state3"; then fail "the secret reached the state"; fi

step "backups preflight"
"$phoenix" backups plans/postgres.toml "${vars[@]}"
if faketime -f '+2h' "$phoenix" backups plans/postgres.toml "${vars[@]}"; then
  fail "backups passed with the backup 2 hours old"
fi
echo "e2e: all checks passed"
