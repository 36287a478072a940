"""POST /graphql: RunPod's admin API (issue 14): being built; the route table is empty until it lands."""

from __future__ import annotations

from serverless.gateway.openapi import Route

ROUTES: tuple[Route, ...] = ()
