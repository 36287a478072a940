"""Writes lines every way a handler does: print, sys.stderr.write, logging, and a print from a
thread it starts itself. Input `{"tag": str, "slow": bool}`; with `slow`, each line comes 0.1 s
after the last, so two jobs overlap (two at once: concurrency_modifier). Prints one line while
the file loads, before serverless.start (a model loading)."""

import logging
import sys
import threading
import time

import serverless

log = logging.getLogger("chatty")


def handler(job):
    tag, slow = job["input"]["tag"], job["input"].get("slow", False)
    pause = 0.1 if slow else 0.0
    print(f"{tag} print")
    time.sleep(pause)
    sys.stderr.write(f"{tag} stderr\n")
    time.sleep(pause)
    log.warning("%s logging", tag)
    if not slow:  # a thread of its own: tagged by the one running job
        thread = threading.Thread(target=print, args=(f"{tag} thread",))
        thread.start()
        thread.join()
    return {"tag": tag}


if __name__ == "__main__":
    print("chatty: loading the model")
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: 2})
