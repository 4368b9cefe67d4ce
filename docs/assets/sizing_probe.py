"""A one-off probe behind the sizing table of docs/deployment.md (not part of the test suite).

Starts a Centrifugo (the pinned binary, the config installws writes, memory engine), opens N
anonymous connections from centrifuge-python clients in this process, each subscribed to the
public channel "tasks", and reports Centrifugo's resident memory before and after; then
publishes P messages of about 250 bytes and times until every client received every one (the
receiving Python clients share the CPU and are the bottleneck: a lower bound).

    .venv-django5.2/bin/python docs/assets/sizing_probe.py 3000 20    # from the repository root
"""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import jwt  # noqa: E402
import urllib3  # noqa: E402
from centrifuge import Client, SubscriptionEventHandler  # noqa: E402

from instant_signals import installer  # noqa: E402
from instant_signals.centrifugo_config import generate_config, write_config  # noqa: E402
from support.processes import CentrifugoProcess, free_port  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def probe(server: CentrifugoProcess, hmac_key: str, n: int, p: int) -> dict:
    token = jwt.encode({"sub": "", "exp": int(time.time()) + 3600}, hmac_key, algorithm="HS256")
    received = 0
    done = asyncio.Event()

    class Counter(SubscriptionEventHandler):
        async def on_publication(self, ctx):
            nonlocal received
            received += 1
            if received == n * p:
                done.set()

    base = rss_mb(server.process.pid)
    clients = []
    for _ in range(n):
        client = Client(server.ws_url, token=token)
        sub = client.new_subscription("tasks", events=Counter())
        await client.connect()
        await sub.subscribe()
        clients.append((client, sub))
    for _, sub in clients:
        await sub.ready(timeout=30)
    await asyncio.sleep(2)
    after = rss_mb(server.process.pid)
    http = urllib3.PoolManager()
    started = time.perf_counter()
    for i in range(p):
        body = json.dumps({"channel": "tasks", "data": {"message": f"m{i}", "pad": "x" * 200}})
        http.request("POST", server.api_url + "/publish", body=body,
                     headers={"X-API-Key": server.api_key})
    await asyncio.wait_for(done.wait(), 300)
    seconds = time.perf_counter() - started
    for client, _ in clients:
        await client.disconnect()
    return {"connections": n, "rss_base_mb": round(base, 1), "rss_after_mb": round(after, 1),
            "kb_per_connection": round((after - base) * 1024 / n, 1), "publications": p,
            "deliveries": n * p, "seconds": round(seconds, 2),
            "deliveries_per_s": round(n * p / seconds)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    p = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    binary = installer.find_or_install(download=False, build=False)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sizing-probe-{os.getpid()}"
    workdir.mkdir(parents=True)
    config = generate_config(port=free_port())
    server = CentrifugoProcess(binary, write_config(workdir / "config.json", config)).start()
    try:
        result = asyncio.run(probe(server, config["client"]["token"]["hmac_secret_key"], n, p))
    finally:
        server.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
