//! Cloudflare's custom-certificate operations for zones, and the same for accounts (a csrd
//! extension, so an account's CSRs have a home for their certificates). Thin shims carrying
//! their OpenAPI annotations; the behaviour lives in `certificates`.

use axum::extract::{RawQuery, Request, State};
use axum::response::Response;

use super::authorized::{Authorized, Reads, Writes};
use super::batches::BatchApi;
use super::certificates::{
    self, CertificateBulk, CertificateCollection, CertificateIdOnly, CertificateSingle,
};
use super::envelope::Failure;
use super::{ApiError, AppState};

/// Emits upload/list/get/edit/delete for one kind of owner (utoipa needs literal paths).
macro_rules! certificate_routes {
    (
        tag: $tag:literal, param: $param:literal, about: $about:literal,
        collection: $collection:literal, item: $item:literal, bulk: $bulk_path:literal,
        bulk_upload: $bulk:ident = $bulk_id:literal,
        upload: $upload:ident = $upload_id:literal, list: $list:ident = $list_id:literal,
        get: $get:ident = $get_id:literal, edit: $edit:ident = $edit_id:literal,
        delete: $delete:ident = $delete_id:literal $(,)?
    ) => {
        #[utoipa::path(post, path = $collection, tag = $tag, operation_id = $upload_id,
            params(($param = String, Path, description = $about)),
            request_body(content = Object, description = "certificate (PEM chain, leaf first), custom_csr_id (required: the key is the CSR's), bundle_method, type, geo_restrictions, policy, deploy. private_key and keyless_server are refused (1440)", content_type = "application/json"),
            responses(
                (status = 200, description = "Stored, checked against the custom CSR's key; messages (1446) list CSR names the certificate does not cover", body = CertificateSingle),
                (status = "4XX", description = "Failure (400: 1220 already stored, 1426 unparsable or a malformed leaf field, 1427 empty, 1429 not the CSR's key, 1430 bad custom_csr_id, 1434 bad attribute, 1440 key material, 1441 chain too long, 1442 self-signed leaf, 1443 expired, 1444 not yet valid, 1445 chain out of order, a signature that does not verify or an algorithm csrd does not verify, 1447 over a certificate cap, 1448 over the verification budget; 404/1431 unknown custom_csr_id)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $upload(State(app): State<AppState>, caller: Authorized<Writes>, request: Request) -> Result<Response, ApiError> {
            certificates::upload(app, caller, request).await
        }

        #[utoipa::path(post, path = $bulk_path, tag = $tag, operation_id = $bulk_id,
            params(($param = String, Path, description = $about)),
            request_body(content = Object, description = "{\"items\": [up to 10,000 upload bodies, each at most 96 KiB of JSON]}: each checked as a single upload is, all stored or none. Charged one request per MiB", content_type = "application/json"),
            responses(
                (status = 200, description = "Every certificate stored (the same leaf sent again is answered with its stored id), in item order", body = CertificateBulk),
                (status = "4XX", description = "Failure (400 lists every refused item's errors at /items/N/…, 1431 for an unknown custom_csr_id, 1447 over a certificate cap, 1448 at /items when checking the chains would take more than 1 ms of CPU per chain plus 50 ms; nothing was stored. 413 over 32 MiB; 429 as for batches)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $bulk(api: BatchApi, State(app): State<AppState>, caller: Authorized<Writes>, request: Request) -> Result<Response, ApiError> {
            certificates::upload_bulk(api, app, caller, request).await
        }

        #[utoipa::path(get, path = $collection, tag = $tag, operation_id = $list_id,
            params(($param = String, Path, description = $about),
                   ("page" = Option<u64>, Query, description = "Page number, from 1"),
                   ("per_page" = Option<u64>, Query, description = "5 to 50, default 20"),
                   ("status" = Option<String>, Query, description = "active or expired (deleted, pending, initializing match nothing here)"),
                   ("match" = Option<String>, Query, description = "any or all (accepted)"),
                   ("expires_before" = Option<String>, Query, description = "csrd extension: only certificates expiring before this RFC 3339 time")),
            responses(
                (status = 200, description = "A page of custom certificates in upload order", body = CertificateCollection),
                (status = "4XX", description = "Failure", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $list(State(app): State<AppState>, caller: Authorized<Reads>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
            certificates::list(app, caller, q).await
        }

        #[utoipa::path(get, path = $item, tag = $tag, operation_id = $get_id,
            params(($param = String, Path, description = $about),
                   ("custom_certificate_id" = String, Path, description = "Custom certificate id")),
            responses(
                (status = 200, description = "The custom certificate", body = CertificateSingle),
                (status = "4XX", description = "Failure (404/1002 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $get(State(app): State<AppState>, caller: Authorized<Reads>) -> Result<Response, ApiError> {
            certificates::get(app, caller).await
        }

        #[utoipa::path(patch, path = $item, tag = $tag, operation_id = $edit_id,
            params(($param = String, Path, description = $about),
                   ("custom_certificate_id" = String, Path, description = "Custom certificate id")),
            request_body(content = Object, description = "Any of certificate, custom_csr_id (checked again), bundle_method, geo_restrictions, policy (null clears these two; absent keeps them), deploy", content_type = "application/json"),
            responses(
                (status = 200, description = "The edited custom certificate: the same id, or for an sni_custom certificate a new one (the old id then answers 404), as Cloudflare does", body = CertificateSingle),
                (status = "4XX", description = "Failure (as for upload; 404/1002 for an unknown id; 409/1400 when other edits of the same certificate won every attempt: send it again)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $edit(State(app): State<AppState>, caller: Authorized<Writes>, request: Request) -> Result<Response, ApiError> {
            certificates::edit(app, caller, request).await
        }

        #[utoipa::path(delete, path = $item, tag = $tag, operation_id = $delete_id,
            params(($param = String, Path, description = $about),
                   ("custom_certificate_id" = String, Path, description = "Custom certificate id")),
            responses(
                (status = 200, description = "Deleted; its custom CSR may be deleted now", body = CertificateIdOnly),
                (status = "4XX", description = "Failure (404/1002 for an unknown id or another tenant's)", body = Failure),
                (status = "5XX", description = "Failure", body = Failure),
            ),
            security(("api_token" = []), ("api_email" = [], "api_key" = [])))]
        pub async fn $delete(State(app): State<AppState>, caller: Authorized<Writes>) -> Result<Response, ApiError> {
            certificates::delete(app, caller).await
        }
    };
}

certificate_routes! {
    tag: "Custom certificates (zone)", param: "zone_id",
    about: "Zone id (32 lowercase hex)",
    collection: "/client/v4/zones/{zone_id}/custom_certificates",
    item: "/client/v4/zones/{zone_id}/custom_certificates/{custom_certificate_id}",
    bulk: "/client/v4/zones/{zone_id}/custom_certificates/bulk",
    bulk_upload: bulk_upload_for_zone = "csrd-custom-certificates-for-a-zone-bulk-upload",
    upload: upload_for_zone = "custom-ssl-for-a-zone-create-ssl-configuration",
    list: list_for_zone = "custom-ssl-for-a-zone-list-ssl-configurations",
    get: get_for_zone = "custom-ssl-for-a-zone-ssl-configuration-details",
    edit: edit_for_zone = "custom-ssl-for-a-zone-edit-ssl-configuration",
    delete: delete_for_zone = "custom-ssl-for-a-zone-delete-ssl-configuration",
}

certificate_routes! {
    tag: "Custom certificates (account, csrd extension)", param: "account_id",
    about: "Account id (32 lowercase hex)",
    collection: "/client/v4/accounts/{account_id}/custom_certificates",
    item: "/client/v4/accounts/{account_id}/custom_certificates/{custom_certificate_id}",
    bulk: "/client/v4/accounts/{account_id}/custom_certificates/bulk",
    bulk_upload: bulk_upload_for_account = "csrd-custom-certificates-for-an-account-bulk-upload",
    upload: upload_for_account = "csrd-custom-certificates-for-an-account-create",
    list: list_for_account = "csrd-custom-certificates-for-an-account-list",
    get: get_for_account = "csrd-custom-certificates-for-an-account-details",
    edit: edit_for_account = "csrd-custom-certificates-for-an-account-edit",
    delete: delete_for_account = "csrd-custom-certificates-for-an-account-delete",
}
