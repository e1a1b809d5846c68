//! Key recipients and their deliveries (csrd extension), for accounts and zones: thin shims
//! carrying their OpenAPI annotations; the behaviour lives in `recipients`.

use axum::extract::{RawQuery, Request, State};
use axum::response::Response;

use super::authorized::{Authorized, Delivers};
use super::envelope::Failure;
use super::recipients::{self, DeliveryCollection, RecipientCollection, RecipientSingle};
use super::{ApiError, AppState};

/// Emits enroll/list/get/revoke/deliveries for one kind of owner (utoipa needs literal paths).
macro_rules! recipient_routes {
    (
        tag: $tag:literal, param: $param:literal, about: $about:literal,
        collection: $collection:literal, item: $item:literal, deliveries: $deliveries_path:literal,
        enroll: $enroll:ident = $enroll_id:literal, list: $list:ident = $list_id:literal,
        get: $get:ident = $get_id:literal, revoke: $revoke:ident = $revoke_id:literal,
        deliveries_fn: $deliveries:ident = $deliveries_id:literal $(,)?
    ) => {
        #[utoipa::path(post, path = $collection, tag = $tag, operation_id = $enroll_id,
            params(($param = String, Path, description = $about)),
            request_body(content = Object, description = "{\"name\": \"web-1\", \"recipient\": \"age1…\" (an age X25519 recipient, as `csrd agent init` prints it), \"hosts\": [1 to 100 names; a wildcard covers one label]}", content_type = "application/json"),
            responses(
                (status = 201, description = "Enrolled, pending: it receives nothing until an operator runs `csrd recipient approve ID --fingerprint HEX`", body = RecipientSingle),
                (status = "4XX", description = "Failure (400/1460 at /name, /recipient or /hosts/N; 403/10000 for a token without the key-delivery permission)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = [])))]
        pub async fn $enroll(State(app): State<AppState>, caller: Authorized<Delivers>, request: Request) -> Result<Response, ApiError> {
            recipients::enroll(app, caller, request).await
        }

        #[utoipa::path(get, path = $collection, tag = $tag, operation_id = $list_id,
            params(($param = String, Path, description = $about),
                   ("page" = Option<u64>, Query, description = "Page number, from 1"),
                   ("per_page" = Option<u64>, Query, description = "5 to 50, default 20")),
            responses(
                (status = 200, description = "A page of the tenant's key recipients in enrollment order", body = RecipientCollection),
                (status = "4XX", description = "Failure", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = [])))]
        pub async fn $list(State(app): State<AppState>, caller: Authorized<Delivers>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            recipients::list(app, caller, q).await
        }

        #[utoipa::path(get, path = $item, tag = $tag, operation_id = $get_id,
            params(($param = String, Path, description = $about),
                   ("key_recipient_id" = String, Path, description = "Key recipient id (UUID)")),
            responses(
                (status = 200, description = "The key recipient", body = RecipientSingle),
                (status = "4XX", description = "Failure (400/1461 malformed id; 404/1462 unknown, or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = [])))]
        pub async fn $get(State(app): State<AppState>, caller: Authorized<Delivers>) -> Result<Response, ApiError> {
            recipients::get(app, caller).await
        }

        #[utoipa::path(delete, path = $item, tag = $tag, operation_id = $revoke_id,
            params(($param = String, Path, description = $about),
                   ("key_recipient_id" = String, Path, description = "Key recipient id (UUID)")),
            responses(
                (status = 200, description = "Revoked at once: it receives nothing from now on (an operator's approval cannot bring it back)", body = RecipientSingle),
                (status = "4XX", description = "Failure (400/1461; 404/1462)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = [])))]
        pub async fn $revoke(State(app): State<AppState>, caller: Authorized<Delivers>) -> Result<Response, ApiError> {
            recipients::revoke(app, caller).await
        }

        #[utoipa::path(get, path = $deliveries_path, tag = $tag, operation_id = $deliveries_id,
            params(($param = String, Path, description = $about),
                   ("key_recipient_id" = String, Path, description = "Key recipient id (UUID)"),
                   ("page" = Option<u64>, Query, description = "Page number, from 1"),
                   ("per_page" = Option<u64>, Query, description = "5 to 100, default 20"),
                   ("custom_csr_id" = Option<String>, Query, description = "Only this custom CSR's delivery"),
                   ("host" = Option<String>, Query, description = "Only deliveries whose certificate covers this host")),
            responses(
                (status = 200, description = "A page of the keys this recipient may receive, in custom CSR id order: every CSR created with key_delivery \"sealed\" whose current (latest, unexpired) certificate's names the recipient's hosts all cover, each key sealed to the recipient for this answer. Every key released is audited (key.released) before the answer is sent", body = DeliveryCollection),
                (status = "4XX", description = "Failure (400/1461; 403/1463 for a pending or revoked recipient; 404/1462 for an unknown one or another tenant's; every refusal is audited as key.release_denied)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = [])))]
        pub async fn $deliveries(State(app): State<AppState>, caller: Authorized<Delivers>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            recipients::deliveries(app, caller, q).await
        }
    };
}

recipient_routes! {
    tag: "Key delivery (account, csrd extension)", param: "account_id",
    about: "Account id (32 lowercase hex)",
    collection: "/client/v4/accounts/{account_id}/key_recipients",
    item: "/client/v4/accounts/{account_id}/key_recipients/{key_recipient_id}",
    deliveries: "/client/v4/accounts/{account_id}/key_recipients/{key_recipient_id}/deliveries",
    enroll: enroll_for_account = "csrd-key-recipients-for-an-account-enroll",
    list: list_for_account = "csrd-key-recipients-for-an-account-list",
    get: get_for_account = "csrd-key-recipients-for-an-account-details",
    revoke: revoke_for_account = "csrd-key-recipients-for-an-account-revoke",
    deliveries_fn: deliveries_for_account = "csrd-key-recipients-for-an-account-deliveries",
}

recipient_routes! {
    tag: "Key delivery (zone, csrd extension)", param: "zone_id",
    about: "Zone id (32 lowercase hex)",
    collection: "/client/v4/zones/{zone_id}/key_recipients",
    item: "/client/v4/zones/{zone_id}/key_recipients/{key_recipient_id}",
    deliveries: "/client/v4/zones/{zone_id}/key_recipients/{key_recipient_id}/deliveries",
    enroll: enroll_for_zone = "csrd-key-recipients-for-a-zone-enroll",
    list: list_for_zone = "csrd-key-recipients-for-a-zone-list",
    get: get_for_zone = "csrd-key-recipients-for-a-zone-details",
    revoke: revoke_for_zone = "csrd-key-recipients-for-a-zone-revoke",
    deliveries_fn: deliveries_for_zone = "csrd-key-recipients-for-a-zone-deliveries",
}
