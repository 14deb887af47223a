"""Collection benchmark: 200 feeds served locally, each answering after 200 ms.

    python benchmarks/collect.py [--feeds 200] [--delay 0.2] [--skip-baseline]

Runs the real `feedbot collect` command in a subprocess (start-up, fetching, storing and
embedding the new items all count) against feeds spread over 50 loopback host names
(127.0.0.2 … 127.0.0.51), as real follow lists are spread over many hosts:

1. warm-up (not timed): every feed once, so the store knows their items;
2. "fresh": 10 % of the feeds have one new entry; no validators are stored, every feed
   answers 200 in full — the run stores and embeds only the new entries;
3. "304": the same again with ETags stored: every feed answers 304;
4. baseline: the "fresh" run with fetch concurrency 1 (one feed at a time), same machine,
   same run;
5. with --pair: two `feedbot collect` started at once on one database (the daemon and a
   `feedbot digest` beside it), every feed with a new entry: the wall time until both have
   ended, and how many requests the feeds got (one per feed when no feed is fetched twice).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOSTS = [f"127.0.0.{i}" for i in range(2, 52)]
TOPICS = ["convolutional networks for images", "transformers for language",
          "GPU kernels for training", "stochastic gradient descent", "recommender systems"]


def feed(n: int, extra: bool) -> bytes:
    entries = []
    count = 6 if extra else 5
    for k in range(count):
        entries.append(
            f"<entry><title>Post {k} of feed {n}: notes on {TOPICS[(n + k) % 5]}</title>"
            f'<link href="https://blog{n}.example.org/{k}"/><id>urn:feed{n}:{k}</id>'
            f"<updated>2026-11-{10 + k:02d}T08:00:00Z</updated>"
            f"<summary>Entry {k} of a benchmark feed about {TOPICS[(n + k) % 5]}.</summary>"
            "</entry>")
    return (f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Feed {n}'
            f"</title><id>urn:feed{n}</id>{''.join(entries)}</feed>").encode()


class State:
    delay = 0.2
    extra: set[int] = set()
    etags = False
    requests = 0


def serve() -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            State.requests += 1  # one handler thread at a time gets here per request: the GIL
            time.sleep(State.delay)
            n = int(self.path.strip("/").split(".")[0])
            extra = n in State.extra
            etag = f'"{n}-{int(extra)}"'
            if State.etags and self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            body = feed(n, extra)
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.send_header("Content-Length", str(len(body)))
            if State.etags:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # listen() backlog; the default 5 drops bursts of connects

    httpd = Server(("0.0.0.0", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, httpd.server_address[1]


def run_collect(env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "feedbot", "collect"], env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - started, out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", type=int, default=200)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--pair", action="store_true",
                    help="also two collects at once on one database")
    args = ap.parse_args()
    State.delay = args.delay
    httpd, port = serve()
    work = Path(tempfile.mkdtemp(prefix="feedbot-bench-"))
    lines = ["learner: {stage: deep-learning}", "blogs:"]
    for n in range(args.feeds):
        lines += [f"  - name: feed {n}", f"    url: http://{HOSTS[n % len(HOSTS)]}:{port}/{n}.xml"]
    (work / "sources.yaml").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, FEEDBOT_SOURCES=str(work / "sources.yaml"), HF_HUB_OFFLINE="1")
    rows = []

    def fresh_home(name: str) -> dict[str, str]:
        home = work / name
        State.extra, State.etags = set(), False
        e = dict(env, FEEDBOT_HOME=str(home))
        run_collect(e)  # warm-up: the store knows every feed's items
        State.extra = set(range(0, args.feeds, 10))
        State.etags = True
        return e

    e = fresh_home("concurrent")
    t_fresh, s_fresh = run_collect(e)
    t_304, s_304 = run_collect(e)
    if not args.skip_baseline:
        b = fresh_home("sequential")
        t_base, s_base = run_collect(dict(b, FEEDBOT_FETCH_CONCURRENCY="1"))
        rows.append(("one feed at a time (baseline), fresh", t_base, s_base, 1.0))
    base = t_base if not args.skip_baseline else float("nan")
    if args.pair:
        e = fresh_home("pair")
        State.extra, State.etags = set(range(args.feeds)), False
        State.requests = 0
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            both = list(pool.map(lambda _: run_collect(e), range(2)))
        t_pair = time.perf_counter() - started
        rows.append(("two collects at once, every feed new", t_pair,
                     f"{State.requests} requests for {args.feeds} feeds; "
                     + "; ".join(summary for _, summary in both), float("nan")))
    rows.append(("feedbot collect, fresh", t_fresh, s_fresh, base / t_fresh))
    rows.append(("feedbot collect, all 304", t_304, s_304, base / t_304))
    httpd.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.feeds} feeds on {len(HOSTS)} loopback hosts, {args.delay * 1000:.0f} ms "
          f"per response, {os.cpu_count()} CPUs\n")
    print("| run | wall s | speed-up vs baseline | result |")
    print("|---|---:|---:|---|")
    for name, t, summary, ratio in rows:
        shown = "–" if ratio != ratio else f"{ratio:.1f}×"  # nan: no baseline (--skip-baseline)
        print(f"| {name} | {t:.2f} | {shown} | {summary} |")


if __name__ == "__main__":
    main()
