"""Echo: returns its input. The smallest podq (and RunPod) handler."""

import serverless


def handler(job):
    return {"echo": job["input"]}


if __name__ == "__main__":
    serverless.start({"handler": handler})
