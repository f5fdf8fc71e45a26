"""Jobs that only tests need, registered in test servers through the `jobs` setting."""

from __future__ import annotations

import hashlib

from threadsvc import Context, Role, Scope, job
from threadsvc.runner.params import File, Integer, Text

CHUNK = b"0123456789abcdef" * 65536  # 1 MiB


@job("big-result", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"mib": Integer(minimum=1, maximum=1024, default=1)})
async def big_result(ctx: Context) -> None:
    """Write a result of `mib` MiB, a MiB at a time, from a worker thread."""
    mib: int = ctx.params["mib"]
    async with ctx.result_file("big.bin", "application/octet-stream") as out:

        def write() -> None:
            for i in range(mib):
                ctx.check_cancelled()
                out.write(CHUNK)
                ctx.sync.progress(i + 1, mib)

        await ctx.run_sync(write)


@job("checksum", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"files": File(multiple=True, required=True), "label": Text(max_length=50)})
async def checksum(ctx: Context) -> None:
    """Log each uploaded file's name, size and SHA-256; the result lists them."""
    lines = []
    for item in ctx.files("files"):
        digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
        lines.append(f"{item.name} {item.size} {digest}")
        await ctx.log(lines[-1])
    await ctx.set_result("\n".join(lines), "text/plain", "checksums.txt")
