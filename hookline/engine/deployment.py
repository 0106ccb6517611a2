"""The work pool and deployment every Hookline recipe run is created from.

All recipes share one flow (`hookline-recipe`) and one deployment (`hookline-recipe/hookline`)
in the work pool `hookline` (type ``hookline``: only `hookline worker` executes it, in-process).
Registering is idempotent and cheap, so the dispatcher and every worker do it at start-up;
`prefect.yaml` declares the same deployment for teams that manage deployments with
`prefect deploy`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from hookline.flows.recipe_flow import recipe_flow

WORK_POOL = "hookline"
WORK_POOL_TYPE = "hookline"
DEPLOYMENT = "hookline"
ENTRYPOINT = "hookline/flows/recipe_flow.py:recipe_flow"


async def ensure_deployment(client: Any, *, work_pool: str = WORK_POOL) -> UUID:
    """Create (or find) the work pool and the recipe deployment; return the deployment id."""
    try:
        await client.create_work_pool(
            WorkPoolCreate(
                name=work_pool,
                type=WORK_POOL_TYPE,
                description="Hookline recipe runs; executed in-process by `hookline worker`.",
            )
        )
    except ObjectAlreadyExists:
        pass
    flow_id = await client.create_flow(recipe_flow)
    deployment_id: UUID = await client.create_deployment(
        flow_id,
        name=DEPLOYMENT,
        work_pool_name=work_pool,
        entrypoint=ENTRYPOINT,
        description="Runs one Hookline recipe for one webhook event.",
        tags=["hookline"],
        enforce_parameter_schema=False,
    )
    return deployment_id
