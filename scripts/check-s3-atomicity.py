# Does moto's S3 server honour If-None-Match / If-Match atomically?
import subprocess, time, threading, sys, urllib.request, socket
import boto3, botocore
port = 5077
p = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError: time.sleep(0.1)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x",
                      config=botocore.config.Config(max_pool_connections=50))
    s3.create_bucket(Bucket="bkt1")
    # If-None-Match race
    fails = 0
    for round in range(50):
        key = f"k{round}"
        wins = []
        barrier = threading.Barrier(16)
        def put(i):
            barrier.wait()
            try:
                s3.put_object(Bucket="bkt1", Key=key, Body=str(i).encode(), IfNoneMatch="*")
                wins.append(i)
            except botocore.exceptions.ClientError as e:
                pass
        ts = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        [t.start() for t in ts]; [t.join() for t in ts]
        if len(wins) != 1: fails += 1; print("round", round, "winners", wins)
    print("if-none-match rounds with != 1 winner:", fails)
    # If-Match race
    fails = 0
    for round in range(50):
        key = f"m{round}"
        etag = s3.put_object(Bucket="bkt1", Key=key, Body=b"0")["ETag"]
        wins = []
        barrier = threading.Barrier(16)
        def put(i):
            barrier.wait()
            try:
                s3.put_object(Bucket="bkt1", Key=key, Body=str(i).encode()+b"x", IfMatch=etag)
                wins.append(i)
            except botocore.exceptions.ClientError as e:
                pass
        ts = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        [t.start() for t in ts]; [t.join() for t in ts]
        if len(wins) != 1: fails += 1; print("round", round, "winners", wins)
    print("if-match rounds with != 1 winner:", fails)
    # conditional delete
    etag = s3.put_object(Bucket="bkt1", Key="d", Body=b"1")["ETag"]
    try:
        s3.delete_object(Bucket="bkt1", Key="d", IfMatch='"nope"')
        print("delete If-Match wrong etag: accepted (ignored)")
    except botocore.exceptions.ClientError as e:
        print("delete If-Match wrong etag: refused", e.response["Error"]["Code"])
    try:
        s3.head_object(Bucket="bkt1", Key="d"); print("object still there")
    except botocore.exceptions.ClientError: print("object gone")
finally:
    p.terminate(); p.wait()
