"""/v1/batches: batch jobs (issue 13): being built; the route table is empty until it lands."""

from __future__ import annotations

from serverless.gateway.openapi import Route

ROUTES: tuple[Route, ...] = ()
