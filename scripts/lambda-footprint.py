#!/usr/bin/env python3
"""Size and start-up of a Lambda bootstrap binary next to a hello-world one, side by side.

    scripts/lambda-footprint.py OURS HELLO [RUNS]

For each binary: its size deflated as `make build` zips it, and the time from exec to its first
request on a Runtime API socket (what Lambda calls the init phase, minus the sandbox), RUNS times
(default 30), interleaved with the other binary after one warm-up round. The binary gets only the
environment Lambda gives a function (`_HANDLER=migrate`, a `DB_SECRET_ARN`, a region); nothing is
contacted before the poll. Prints one Markdown table; median and p99 in milliseconds.
"""

import io
import os
import socket
import statistics
import subprocess
import sys
import time
import zipfile


def deflated(path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return len(buf.getvalue())


def first_poll(path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(30)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % listener.getsockname()[1],
        "_HANDLER": "migrate",
        "AWS_LAMBDA_FUNCTION_NAME": "footprint",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "DB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
    }
    # FOOTPRINT_ENV_X=v sets X=v for the binary.
    env.update({k[len("FOOTPRINT_ENV_"):]: v for k, v in os.environ.items() if k.startswith("FOOTPRINT_ENV_")})
    started = time.perf_counter()
    proc = subprocess.Popen([path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn, _ = listener.accept()
        elapsed = time.perf_counter() - started
        conn.settimeout(10)
        request = conn.recv(4096).split(b"\r\n", 1)[0].decode()
        conn.close()
        # A start-up failure posts to /init/error instead: that is not a start-up time.
        if not request.startswith("GET /2018-06-01/runtime/invocation/next"):
            sys.exit("%s did not poll for an invocation; its first request: %s" % (path, request))
    finally:
        proc.kill()
        proc.wait()
        listener.close()
    return elapsed * 1000.0


def main():
    ours, hello = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    times = {ours: [], hello: []}
    for rep in range(runs + 1):
        for path in (hello, ours):
            t = first_poll(path)
            if rep > 0:
                times[path].append(t)
    print("| binary | size | deflated (zip) | start-up median | p99 | runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in (hello, ours):
        xs = sorted(times[path])
        p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
        print(
            "| %s | %.1f MiB | %.1f MiB | %.2f ms | %.2f ms | %d |"
            % (path, os.path.getsize(path) / 2**20, deflated(path) / 2**20, statistics.median(xs), p99, len(xs))
        )
    ratio = statistics.median(times[ours]) / statistics.median(times[hello])
    print("\nstart-up ratio (median, ours / hello): %.2f" % ratio)


if __name__ == "__main__":
    main()
