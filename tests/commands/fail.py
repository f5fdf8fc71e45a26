"""Says so on stderr, then exits with the status given (or kills itself with `kill`)."""

import os
import signal
import sys

print("about to fail", file=sys.stderr, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(sys.argv[1]))
