//! The eight Cloudflare operations, once for accounts and once for zones, and csrd's batch
//! operations. Each is a thin shim carrying its OpenAPI annotation; the behaviour lives in
//! `csrs` and `batches`.

use axum::extract::{RawQuery, Request, State};
use axum::response::Response;

use super::authorized::{Authorized, Reads, Writes};
use super::batches::BatchApi;
use super::envelope::{
    BatchCollection, BatchResults, BatchSingle, CsrCollection, CsrIdOnly, CsrPending, CsrSingle,
    Failure,
};
use super::openapi::{
    AccountBatchBody, AccountCreateBody, BatchPageParams, ListParams, ResultPageParams,
    ZoneBatchBody, ZoneCreateBody,
};
use super::{ApiError, AppState, batches, csrs};

/// Emits create/list/get/delete for one kind of owner. utoipa needs literal paths and ids,
/// hence the many literals.
macro_rules! tenant_routes {
    (
        tag: $tag:literal, param: $param:literal, about: $about:literal,
        collection: $collection:literal, item: $item:literal, create_body: $body:ty,
        create: $create:ident = $create_id:literal, list: $list:ident = $list_id:literal,
        get: $get:ident = $get_id:literal, delete: $delete:ident = $delete_id:literal $(,)?
    ) => {
        #[utoipa::path(post, path = $collection, tag = $tag, operation_id = $create_id,
            params(($param = String, Path, description = $about)),
            request_body = $body,
            responses(
                (status = 201, description = "Created", body = CsrSingle),
                (status = 202, description = "Accepted, still being generated; retry with the same Idempotency-Key or GET the id", body = CsrPending),
                (status = "4XX", description = "Failure (422/1422: Idempotency-Key reused with another body; 429/971 with Retry-After: over the tenant's request rate, in-flight cap or hourly quota, or not let into the queue within the create wait)", body = Failure),
                (status = "5XX", description = "Failure (503 with Retry-After when a dependency is down)", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $create(State(app): State<AppState>, caller: Authorized<Writes>, request: Request) -> Result<Response, ApiError> {
            csrs::create(app, caller, request).await
        }

        #[utoipa::path(get, path = $collection, tag = $tag, operation_id = $list_id,
            params(($param = String, Path, description = $about), ListParams),
            responses(
                (status = 200, description = "A page of custom CSRs; a page past the end is empty", body = CsrCollection),
                (status = "4XX", description = "Failure", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $list(State(app): State<AppState>, caller: Authorized<Reads>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            csrs::list(app, caller, q).await
        }

        #[utoipa::path(get, path = $item, tag = $tag, operation_id = $get_id,
            params(($param = String, Path, description = $about),
                   ("custom_csr_id" = String, Path, description = "Custom CSR id (UUID)")),
            responses(
                (status = 200, description = "The custom CSR", body = CsrSingle),
                (status = "4XX", description = "Failure (404/1419 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $get(State(app): State<AppState>, caller: Authorized<Reads>) -> Result<Response, ApiError> {
            csrs::get(app, caller).await
        }

        #[utoipa::path(delete, path = $item, tag = $tag, operation_id = $delete_id,
            params(($param = String, Path, description = $about),
                   ("custom_csr_id" = String, Path, description = "Custom CSR id (UUID)")),
            request_body(content = Option<Object>, description = "Optional and ignored (official SDKs send none)", content_type = "application/json"),
            responses(
                (status = 200, description = "Deleted, with its private key", body = CsrIdOnly),
                (status = "4XX", description = "Failure (404/1419 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $delete(State(app): State<AppState>, caller: Authorized<Writes>) -> Result<Response, ApiError> {
            csrs::delete(app, caller).await
        }
    };
}

tenant_routes! {
    tag: "Custom CSRs (account)", param: "account_id",
    about: "Account id (32 lowercase hex)",
    collection: "/client/v4/accounts/{account_id}/custom_csrs",
    item: "/client/v4/accounts/{account_id}/custom_csrs/{custom_csr_id}",
    create_body: AccountCreateBody,
    create: create_for_account = "custom-csrs-for-an-account-create-custom-csr",
    list: list_for_account = "custom-csrs-for-an-account-list-custom-csrs",
    get: get_for_account = "custom-csrs-for-an-account-custom-csr-details",
    delete: delete_for_account = "custom-csrs-for-an-account-delete-custom-csr",
}

tenant_routes! {
    tag: "Custom CSRs (zone)", param: "zone_id",
    about: "Zone id (32 lowercase hex)",
    collection: "/client/v4/zones/{zone_id}/custom_csrs",
    item: "/client/v4/zones/{zone_id}/custom_csrs/{custom_csr_id}",
    create_body: ZoneCreateBody,
    create: create_for_zone = "custom-csrs-for-a-zone-create-custom-csr",
    list: list_for_zone = "custom-csrs-for-a-zone-list-custom-csrs",
    get: get_for_zone = "custom-csrs-for-a-zone-custom-csr-details",
    delete: delete_for_zone = "custom-csrs-for-a-zone-delete-custom-csr",
}

/// Emits the batch operations for one kind of owner.
macro_rules! batch_routes {
    (
        tag: $tag:literal, param: $param:literal, about: $about:literal,
        collection: $collection:literal, item: $item:literal, results: $results:literal,
        body: $body:ty,
        submit: $submit:ident = $submit_id:literal, list: $list:ident = $list_id:literal,
        get: $get:ident = $get_id:literal, results_fn: $results_fn:ident = $results_id:literal $(,)?
    ) => {
        #[utoipa::path(post, path = $collection, tag = $tag, operation_id = $submit_id,
            params(($param = String, Path, description = $about)),
            request_body = $body,
            responses(
                (status = 202, description = "Accepted: every item was valid and is stored; poll the batch (Location) and its results", body = BatchSingle),
                (status = "4XX", description = "Failure (400 lists every invalid item's errors, with pointers like /items/17/sans/0; nothing was created. 429/971 with Retry-After: over the tenant's request rate, its items outstanding or its hourly quota; nothing was stored)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $submit(api: BatchApi, caller: Authorized<Writes>, request: Request) -> Result<Response, ApiError> {
            batches::submit(api, caller, request).await
        }

        #[utoipa::path(get, path = $collection, tag = $tag, operation_id = $list_id,
            params(($param = String, Path, description = $about), BatchPageParams),
            responses(
                (status = 200, description = "A page of the tenant's batches, newest first", body = BatchCollection),
                (status = "4XX", description = "Failure", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $list(api: BatchApi, caller: Authorized<Reads>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            batches::list(api, caller, q).await
        }

        #[utoipa::path(get, path = $item, tag = $tag, operation_id = $get_id,
            params(($param = String, Path, description = $about),
                   ("batch_id" = String, Path, description = "Batch id (UUID)")),
            responses(
                (status = 200, description = "The batch and its progress", body = BatchSingle),
                (status = "4XX", description = "Failure (404/1419 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $get(api: BatchApi, caller: Authorized<Reads>) -> Result<Response, ApiError> {
            batches::get(api, caller).await
        }

        #[utoipa::path(get, path = $results, tag = $tag, operation_id = $results_id,
            params(($param = String, Path, description = $about),
                   ("batch_id" = String, Path, description = "Batch id (UUID)"), ResultPageParams),
            responses(
                (status = 200, description = "A page of the batch's entries, in item order", body = BatchResults),
                (status = "4XX", description = "Failure (404/1419 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $results_fn(api: BatchApi, caller: Authorized<Reads>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            batches::results(api, caller, q).await
        }
    };
}

batch_routes! {
    tag: "Batches (account, csrd extension)", param: "account_id",
    about: "Account id (32 lowercase hex)",
    collection: "/client/v4/accounts/{account_id}/custom_csrs/batches",
    item: "/client/v4/accounts/{account_id}/custom_csrs/batches/{batch_id}",
    results: "/client/v4/accounts/{account_id}/custom_csrs/batches/{batch_id}/results",
    body: AccountBatchBody,
    submit: submit_batch_for_account = "csrd-batches-for-an-account-submit",
    list: list_batches_for_account = "csrd-batches-for-an-account-list",
    get: get_batch_for_account = "csrd-batches-for-an-account-details",
    results_fn: batch_results_for_account = "csrd-batches-for-an-account-results",
}

batch_routes! {
    tag: "Batches (zone, csrd extension)", param: "zone_id",
    about: "Zone id (32 lowercase hex)",
    collection: "/client/v4/zones/{zone_id}/custom_csrs/batches",
    item: "/client/v4/zones/{zone_id}/custom_csrs/batches/{batch_id}",
    results: "/client/v4/zones/{zone_id}/custom_csrs/batches/{batch_id}/results",
    body: ZoneBatchBody,
    submit: submit_batch_for_zone = "csrd-batches-for-a-zone-submit",
    list: list_batches_for_zone = "csrd-batches-for-a-zone-list",
    get: get_batch_for_zone = "csrd-batches-for-a-zone-details",
    results_fn: batch_results_for_zone = "csrd-batches-for-a-zone-results",
}
