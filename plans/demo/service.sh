#!/bin/sh
# A stand-in for the service being rebuilt: it runs until stopped, says it is
# ready once started, and reports what it serves in `status`.
site=$1
echo $$ > "$site/service.pid"
trap 'echo "stopped" > "$site/service.status"; rm -f "$site/service.ready"; exit 0' TERM INT
echo "starting" > "$site/service.status"
touch "$site/service.ready"
while :; do
    if [ -f "$site/etc/app.conf" ] && [ -f "$site/data/data/MANIFEST" ]; then
        echo "serving $(grep -c . "$site/data/data/customers.csv") lines" > "$site/service.status"
    fi
    sleep 0.2
done
