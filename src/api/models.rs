//! `GET /v1/models` (OpenAI's list, each model with its state here) and
//! `POST`/`DELETE /v1/models/{id}/load`, which load a model ahead of its
//! first request and unload it (409 while in use). Loading and unloading
//! change what every caller gets, so with API keys they take an `admin` key.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::dispatch::models::ModelState;
use crate::error::{ApiError, OpenAiError};
use crate::jobs::Caller;
use crate::state::AppState;

fn entry(m: &ModelState) -> serde_json::Value {
    json!({"id": m.id, "object": "model", "created": 0, "owned_by": "whisper-serve",
        "state": m.state, "default": m.default, "in_use": m.in_use, "load_s": m.load_s})
}

/// The models a request may name, with their state here: `whisper-1` (the
/// default model), then each model loaded, in `model.model_dir`, or (with
/// `models.pull_on_demand`) downloadable.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses(
        (status = 200, description = "Served models", body = crate::api::docs::ModelList),
        (status = 401, description = "A key is required", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models = state.dispatcher.models().await;
    let mut data = Vec::with_capacity(models.len() + 1);
    if let Some(d) = models.iter().find(|m| m.default) {
        data.push(entry(&ModelState { id: "whisper-1".into(), ..d.clone() }));
    }
    data.extend(models.iter().map(entry));
    Json(json!({"object": "list", "data": data}))
}

/// An `admin` key's operation when keys are in use (without keys, every
/// caller is the same anonymous one).
fn admin_only(state: &AppState, caller: Option<Extension<Caller>>) -> Result<(), ApiError> {
    match caller {
        Some(Extension(c)) if state.config.auth.keys_in_use() && !c.admin => Err(ApiError::Forbidden("loading and unloading models takes an admin key".into())),
        _ => Ok(()),
    }
}

/// Loads a model now (pulled first with `models.pull_on_demand`), so its
/// first request does not wait for it.
#[utoipa::path(post, path = "/v1/models/{id}/load", tag = "openai",
    params(("id" = String, Path, description = "A model name (`tiny.en`, `base`, a folder of `model.model_dir`)")),
    responses(
        (status = 200, description = "Loaded", body = crate::api::docs::Model),
        (status = 403, description = "Not an admin key", body = crate::api::docs::OpenAiErrorBody),
        (status = 404, description = "Not a model served here", body = crate::api::docs::OpenAiErrorBody),
        (status = 409, description = "Cannot be loaded by hand here (a gateway)", body = crate::api::docs::OpenAiErrorBody),
        (status = 503, description = "Cannot be loaded now (`models.max_loaded` reached with all in use, or not enough memory)", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn load_model(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    admin_only(&state, caller)?;
    let m = state.dispatcher.load_model(&id).await.map_err(ApiError::from)?;
    Ok(Json(entry(&m)).into_response())
}

/// Unloads a model; 409 while requests use it, and for the default model.
#[utoipa::path(delete, path = "/v1/models/{id}/load", tag = "openai",
    params(("id" = String, Path, description = "A loaded model's id")),
    responses(
        (status = 200, description = "Unloaded", body = crate::api::docs::Model),
        (status = 403, description = "Not an admin key", body = crate::api::docs::OpenAiErrorBody),
        (status = 404, description = "Not a model served here", body = crate::api::docs::OpenAiErrorBody),
        (status = 409, description = "In use, not loaded, or the default model (`conflict`)", body = crate::api::docs::OpenAiErrorBody),
    ))]
pub(super) async fn unload_model(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    admin_only(&state, caller)?;
    state.dispatcher.unload_model(&id).await.map_err(ApiError::from)?;
    let m = ModelState { id: crate::models::id_of(&id), state: "unloaded", default: false, in_use: Some(0), load_s: None };
    Ok(Json(entry(&m)).into_response())
}
