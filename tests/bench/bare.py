"""The bare app polling is compared with: Starlette, one route on the progress path, answering
fixed bytes with the headers threadsvc sent, served by `uvicorn.run` with the same arguments
as `threadsvc serve` (threadsvc/cli/serve.py): the same event loop, HTTP parser and access log.

    python -m tests.bench.bare PORT RESPONSE.json   # {"body": "...", "headers": {...}}
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
    app = bare_app(spec["body"].encode(), headers, spec["headers"].get("content-type", ""))
    # As threadsvc/cli/serve.py `serve` calls it.
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        proxy_headers=True,
        timeout_graceful_shutdown=6,
        log_level="info",
    )


if __name__ == "__main__":
    main()
