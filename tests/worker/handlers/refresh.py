"""Counts the jobs this process has run; refresh_worker gives every job a fresh process."""

import serverless

RUNS = 0


def handler(job):
    global RUNS
    RUNS += 1
    return {"runs_in_this_process": RUNS}


if __name__ == "__main__":
    serverless.start({"handler": handler, "refresh_worker": True})
