"""A worker that dies at start-up (a broken image), for crash-loop tests."""

raise SystemExit("model weights not found")
