"""Removes the directory its profile is written into halfway, then goes on
and exits normally with status 3."""

import os
import shutil
import sys
import time

time.sleep(0.2)
shutil.rmtree(os.environ["PROFILE_DIR"])
time.sleep(0.2)
print("still running")
sys.exit(3)
