//! csrd's own OpenAPI 3 document, generated from the handlers' annotations. The router is
//! built from the same registrations (utoipa-axum), so a route cannot exist undocumented.

use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Create body for an account CSR (Cloudflare's `custom_csr_create_request`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: bodies are parsed by `domain::CreateCsr::parse`
pub struct AccountCreateBody {
    #[schema(example = "example.com", max_length = 64)]
    common_name: String,
    /// ISO 3166-1 alpha-2.
    #[schema(example = "US")]
    country: String,
    #[schema(example = "California")]
    state: String,
    #[schema(example = "San Francisco")]
    locality: String,
    #[schema(example = "Cloudflare, Inc.")]
    organization: String,
    #[schema(example = "Engineering")]
    organizational_unit: Option<String>,
    /// 1–150 DNS names; a wildcard only as the whole leftmost label.
    #[schema(example = json!(["example.com", "www.example.com"]), min_items = 1, max_items = 150)]
    sans: Vec<String>,
    /// `rsa2048` (default) or `p256v1`; csrd extension: `rsa3072`, `rsa4096` (RSA, signed
    /// with SHA-256) and `p384` (ECDSA P-384 with SHA-384).
    #[schema(example = "rsa2048")]
    key_type: Option<String>,
    #[schema(example = "My Custom CSR")]
    name: Option<String>,
    #[schema(example = "CSR for example.com")]
    description: Option<String>,
    /// csrd extension: `none` (default: the key never leaves csrd) or `sealed` (the key may
    /// be released, sealed to a recipient an operator approved). Fixed at creation.
    #[schema(example = "none")]
    key_delivery: Option<String>,
}

/// Create body for a zone CSR (no `name` or `description`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ZoneCreateBody {
    #[schema(example = "example.com", max_length = 64)]
    common_name: String,
    #[schema(example = "US")]
    country: String,
    state: String,
    locality: String,
    organization: String,
    organizational_unit: Option<String>,
    #[schema(min_items = 1, max_items = 150)]
    sans: Vec<String>,
    /// `rsa2048` (default) or `p256v1`; csrd extension: `rsa3072`, `rsa4096`, `p384`.
    key_type: Option<String>,
    /// csrd extension: `none` (default) or `sealed`.
    key_delivery: Option<String>,
}

/// List parameters. `order` and `direction` are Cloudflare's account-list parameters; csrd
/// honours them on zone lists too.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only: parsed by `domain::ListQuery::parse`
pub struct ListParams {
    /// Page number, from 1. A page past the end is empty.
    #[param(minimum = 1, default = 1)]
    page: Option<u64>,
    /// 5–50; default 50 for accounts, 20 for zones.
    #[param(minimum = 5, maximum = 50)]
    per_page: Option<u64>,
    /// `name`, `account_tag` or `created_at` (default).
    order: Option<String>,
    /// `asc` (default) or `desc`.
    direction: Option<String>,
}

/// A batch of account creates (csrd extension): 1–10,000 create bodies.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: parsed by `domain::batch::parse_items`
pub struct AccountBatchBody {
    #[schema(min_items = 1, max_items = 10000)]
    items: Vec<AccountCreateBody>,
}

/// A batch of zone creates (csrd extension): 1–10,000 create bodies.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ZoneBatchBody {
    #[schema(min_items = 1, max_items = 10000)]
    items: Vec<ZoneCreateBody>,
}

/// Paging of the batch list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct BatchPageParams {
    #[param(minimum = 1, default = 1)]
    page: Option<u64>,
    #[param(minimum = 1, maximum = 100, default = 20)]
    per_page: Option<u64>,
}

/// Paging of a batch's results.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only
pub struct ResultPageParams {
    #[param(minimum = 1, default = 1)]
    page: Option<u64>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    per_page: Option<u64>,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API token from `csrd token create`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_email",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Email",
                "Legacy scheme: the user's email, with X-Auth-Key",
            ))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Key",
                "Legacy scheme: the global API key from `csrd user create`",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "csrd",
        description = "Cloudflare-compatible Custom CSR service. Successful responses use Cloudflare's success envelope; every 4xx and 5xx uses the failure envelope.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(AccountCreateBody, ZoneCreateBody, AccountBatchBody, ZoneBatchBody)),
)]
pub struct ApiDoc;
