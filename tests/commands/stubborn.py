"""Ignores SIGTERM (saying so), as does the child it starts; prints both pids, then waits."""

import signal
import subprocess
import sys
import time


def ignore(signum: int, frame: object) -> None:
    print("ignoring SIGTERM", flush=True)


signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
signal.signal(signal.SIGTERM, ignore)
print(f"pids: {child.pid}", flush=True)
while True:
    time.sleep(1)
