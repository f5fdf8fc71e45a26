"""The bare app polling is compared with: Starlette, one route on the progress path, answering
fixed bytes with the headers threadsvc sent, served by `uvicorn.run` on the stack threadsvc runs
on (`auto`: uvloop and httptools; `plain`: asyncio and h11), without an access log (the limit)
or with uvicorn's own (what a plain uvicorn deployment pays for one).

    python -m tests.bench.bare PORT RESPONSE.json STACK ACCESS_LOG
    # RESPONSE.json: {"body": "...", "headers": {...}}; STACK: auto|plain; ACCESS_LOG: on|off
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def bare_app(body: bytes, headers: dict[str, str], media_type: str) -> Starlette:
    async def progress(request: Request) -> Response:
        return Response(body, headers=headers, media_type=media_type)

    return Starlette(
        routes=[
            Route("/ps/service/threads/{id}/progress", progress, methods=["GET"]),
            Route("/ps/service/groups/{group}/threads/{id}/progress", progress, methods=["GET"]),
        ]
    )


def main() -> None:
    port = int(sys.argv[1])
    spec = json.loads(Path(sys.argv[2]).read_text())
    skip = ("content-type", "content-length", "date", "server")
    headers = {k: v for k, v in spec["headers"].items() if k.lower() not in skip}
    stack, access_log = sys.argv[3], sys.argv[4] == "on"
    app = bare_app(spec["body"].encode(), headers, spec["headers"].get("content-type", ""))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        proxy_headers=True,
        timeout_graceful_shutdown=6,
        log_level="info",
        access_log=access_log,
        loop="asyncio" if stack == "plain" else "auto",
        http="h11" if stack == "plain" else "auto",
    )


if __name__ == "__main__":
    main()
