"""`python -m worker handler.py --endpoint ID`: the same as `podq worker`."""

from worker.files import main

main()
