"""GET /v1/models: the active bundles."""

from __future__ import annotations

from fastapi import APIRouter

from appliance.api.auth import ServicesDep, UserCaller
from appliance.api.backend import ModelInfo
from appliance.api.errors import ApiError
from appliance.api.wire import ERRORS, Model, ModelList

router = APIRouter(responses=ERRORS)


def _model(m: ModelInfo) -> Model:
    return Model(id=m.name, created=m.created, version=m.version, profile=m.profile)


@router.get("/v1/models")
async def list_models(_: UserCaller, svc: ServicesDep) -> ModelList:
    return ModelList(data=[_model(m) for m in await svc.backend.models()])


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, _: UserCaller, svc: ServicesDep) -> Model:
    for m in await svc.backend.models():
        if m.name == model_id:
            return _model(m)
    raise ApiError(404, f"model {model_id!r} does not exist or is not active", code="model_not_found")
