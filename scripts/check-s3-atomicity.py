#!/usr/bin/env python3
"""Does moto's S3 server honour If-None-Match and If-Match atomically?

Races 16 conditional writers 50 times for each kind of condition against a
fresh `moto_server` on 127.0.0.1 and counts the rounds that did not have
exactly one winner; then checks that a conditional delete with a stale ETag
is refused. The remote-state tests rely on this (issue 8).
"""
import socket, subprocess, threading, time
import boto3, botocore

PORT = 5077
server = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(PORT)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", PORT)).close()
            break
        except OSError:
            time.sleep(0.1)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{PORT}", region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x",
                      config=botocore.config.Config(max_pool_connections=50))
    s3.create_bucket(Bucket="bkt1")

    def race(name, condition):
        """Rounds in which 16 simultaneous conditional PUTs had not exactly one winner."""
        bad = 0
        for round in range(50):
            key = f"{name}{round}"
            extra = condition(key)
            wins, barrier = [], threading.Barrier(16)

            def put(i):
                barrier.wait()
                try:
                    s3.put_object(Bucket="bkt1", Key=key, Body=f"{i}x".encode(), **extra)
                    wins.append(i)
                except botocore.exceptions.ClientError:
                    pass
            threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            if len(wins) != 1:
                bad += 1
                print("round", round, "winners", wins)
        print(f"{name}: rounds with other than one winner: {bad} of 50")
        return bad

    bad = race("if-none-match", lambda key: {"IfNoneMatch": "*"})
    bad += race("if-match", lambda key: {
        "IfMatch": s3.put_object(Bucket="bkt1", Key=key, Body=b"0")["ETag"]})
    s3.put_object(Bucket="bkt1", Key="d", Body=b"1")
    try:
        s3.delete_object(Bucket="bkt1", Key="d", IfMatch='"nope"')
        print("delete with a stale If-Match: accepted (ignored)")
        bad += 1
    except botocore.exceptions.ClientError as e:
        print("delete with a stale If-Match: refused", e.response["Error"]["Code"])
    raise SystemExit(1 if bad else 0)
finally:
    server.terminate()
    server.wait()
