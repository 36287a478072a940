"""Celery with a Redis broker and result backend, a no-op task (the queue-path peer)."""

import os

from celery import Celery

url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench", broker=url, backend=url)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=16, broker_connection_retry_on_startup=True,
                result_expires=600, worker_hijack_root_logger=False)


@app.task
def noop():
    return None
