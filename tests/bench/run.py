"""The benchmark runner: starts real servers, measures side by side, prints a table and writes
docs/performance.md.

    python -m tests.bench                      # everything, full sizes, SQLite and PostgreSQL
    python -m tests.bench --quick              # small sizes: a few minutes
    python -m tests.bench --store sqlite --only 1,2
    python -m tests.bench --quick --no-write   # print only

Needs wrk (Debian: apt-get install wrk); item 3 also redis-server and network access for pip
the first time (it makes tests/bench/.venv-peers with SAQ and procrastinate).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tests.bench import report
from tests.bench.common import (
    ROOT,
    Figure,
    Results,
    Stores,
    fmt,
    load_average,
    raise_open_files,
    remove,
    say,
    workdir,
)
from tests.bench.sizes import FULL, QUICK, Sizes

ITEMS = ("1", "2", "5", "5s", "6", "7", "8", "9", "4", "3")  # the order they run in: the peers last


# The items measured on each store in turn: their module's run(results, stores, store, ...).
PER_STORE = {"1": "polling", "2": "starts", "4": "many", "5": "biglogs", "5s": "logsearch",
             "6": "wake", "9": "dashboard"}


def run_item(item: str, results: Results, stores: Stores, sizes: Sizes, work: Path,
             peers: dict[str, str]) -> None:
    if item in PER_STORE:
        module = importlib.import_module(f"tests.bench.{PER_STORE[item]}")
        for store in stores.names:
            module.run(results, stores, store, sizes, work)
    elif item == "3":
        from tests.bench import peers as peer_bench

        peers.update(peer_bench.run(results, stores, sizes, work))
    elif item == "7":
        from tests.bench import files

        files.run(results, stores, sizes, work)
    elif item == "8":
        from tests.bench import outbox

        outbox.run(results, stores, sizes, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", default=",".join(sorted(ITEMS)),
                        help="items to run, e.g. 1,2,5 (default: all)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"),
                        help="where to write the report (default docs/performance.md)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--size", action="append", default=[], metavar="NAME=VALUE",
                        help="override one size of tests/bench/sizes.py, e.g. waiters=5000")
    parser.add_argument("--from-json", metavar="FILE",
                        help="write the report again from a saved run (tests/bench/results/)")
    parser.add_argument("--conditions", default="",
                        help="a sentence on the conditions of this run, for the report")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    if args.from_json:
        return rewrite(Path(args.from_json), Path(args.output), args.conditions)
    sizes = QUICK if args.quick else FULL
    for item in args.size:
        name, _, value = item.partition("=")
        if not hasattr(sizes, name) or name == "name":
            parser.error(f"--size: no size named {name!r}")
        kind = type(getattr(sizes, name))
        sizes = dataclasses.replace(sizes, **{name: kind(value)})
    names = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    wanted = [i for i in ITEMS if i in {x.strip() for x in args.only.split(",")}]
    limit = raise_open_files()
    say(f"threadsvc benchmarks, {sizes.name} form; stores {', '.join(names)}; items "
        f"{', '.join(wanted)}; open-file limit {limit}; load average {load_average()}")
    load_before = load_average()
    started = time.monotonic()
    results = Results()
    work = workdir()
    stores = Stores(names, work)
    peers: dict[str, str] = {}
    failed: list[str] = []
    try:
        for item in wanted:
            say(f"item {item}")
            try:
                run_item(item, results, stores, sizes, work, peers)
            except Exception as exc:  # noqa: BLE001 - one broken item must not lose the others
                traceback.print_exc()
                failed.append(f"item {item}: {type(exc).__name__}: {exc}")
                results.add(Figure(f"{item}", "did not complete", "", None, "",
                                   note=f"{type(exc).__name__}: {str(exc)[:200]}"))
        postgres = stores.postgres_version()
    finally:
        stores.close()
        remove(work)
    minutes = (time.monotonic() - started) / 60
    print_table(results.figures)
    command = "python -m tests.bench" + (" --quick" if args.quick else "")
    if args.store != "both":
        command += f" --store {args.store}"
    command += "".join(f" --size {item}" for item in args.size)
    info = {
        "command": command,
        "when": report.now_text(),
        "form": sizes.name,
        "stores": ", ".join(names),
        "duration": f"{minutes:.1f} minutes",
        "conditions": args.conditions,
        "load": f"Load average (1, 5, 15 min) {load_before} before the run, "
                f"{load_average()} after.",
        "machine": report.machine(),
        "versions": report.versions(postgres, peers),
    }
    raw = ROOT / "tests" / "bench" / "results"
    raw.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (raw / f"{stamp}-{sizes.name}.json").write_text(
        json.dumps({"info": info, "figures": results.to_json(), "failed": failed}, indent=2))
    if not args.no_write:
        out = Path(args.output)
        out.write_text(report.markdown(results.figures, info, report.kept_notes(out)))
        say(f"wrote {out}")
    for line in failed:
        say(f"FAILED {line}")
    return 1 if failed else 0


def rewrite(saved: Path, out: Path, conditions: str) -> int:
    """The report again from a saved run (new wording, notes), without measuring anything."""
    data = json.loads(saved.read_text())
    figures = [Figure(**{k: v for k, v in f.items() if k != "verdict"}) for f in data["figures"]]
    info = data["info"]
    if conditions:
        info["conditions"] = conditions
    print_table(figures)
    out.write_text(report.markdown(figures, info, report.kept_notes(out)))
    say(f"wrote {out} from {saved}")
    return 0


def print_table(figures: list[Figure]) -> None:
    rows = [("item", "measure", "store", "value", "target", "")]
    for f in report.in_order(figures):
        rows.append((f.item, f.what[:58], f.store, f"{fmt(f.value)} {f.unit}".strip(),
                     f.target_text, f.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    print()
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()


if __name__ == "__main__":
    sys.exit(main())
