"""Starts a child, prints its pid, and sleeps; on SIGTERM says so and exits 0."""

import signal
import subprocess
import sys
import time


def stop(signum: int, frame: object) -> None:
    print("terminating", flush=True)
    sys.exit(0)


child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
signal.signal(signal.SIGTERM, stop)
print(f"pids: {child.pid}", flush=True)
print("progress: 0/1", flush=True)
while True:
    time.sleep(1)
