"""A user's own sitecustomize: records each interpreter that runs it."""

import os

with open(os.environ["SITECUSTOMIZE_LOG"], "a") as f:
    f.write("%d\n" % os.getpid())
