"""Leaves a child running in the background (holding stdout) and exits 0 at once."""

import subprocess
import sys

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"pids: {child.pid}", flush=True)
