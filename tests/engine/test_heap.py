"""Long-lived processes keep their startup heap out of the garbage collector's full walks."""

from __future__ import annotations

import json
import subprocess
import sys

_SERVER_STARTUP = """
import asyncio, gc, json, uvicorn
from hookline.engine.prefect_serve import freeze_once_started

freeze_once_started()
kept = []

async def app(scope, receive, send):  # a lifespan that builds a heap, as Prefect's does
    if scope["type"] == "lifespan":
        await receive()
        kept.extend([n] for n in range(50_000))  # lists: tracked by the collector
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

async def main():
    server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    frozen = gc.get_freeze_count()
    server.should_exit = True
    await serving
    print(json.dumps({"frozen": frozen, "kept": len(kept)}))

asyncio.run(main())
"""


def test_the_prefect_server_freezes_what_its_startup_built() -> None:
    # Prefect's server builds ~290,000 objects in its lifespan; left to the collector, its
    # full walks stopped the server 0.2-0.3 s every ~6 s under load (bench/README.md)
    out = subprocess.run(
        [sys.executable, "-c", _SERVER_STARTUP], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["kept"] == 50_000 and seen["frozen"] > 50_000
