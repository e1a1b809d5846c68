//! Cloudflare's response envelopes. These types are both what csrd serialises and what its
//! OpenAPI document describes, so the two cannot drift apart.

use serde::Serialize;
use utoipa::ToSchema;

pub use super::error_item::{ErrorItem, ErrorSource};
use super::result::{BatchEntryResult, BatchResult, CsrResult, PendingResult};

/// The failure envelope of every 4xx and 5xx.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    #[schema(value_type = bool, example = false)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    #[schema(value_type = Option<Object>, nullable = true)]
    pub result: Option<()>,
}

impl Failure {
    pub fn new(errors: Vec<ErrorItem>) -> Self {
        Self {
            success: false,
            errors,
            messages: Vec::new(),
            result: None,
        }
    }
}

macro_rules! success_envelope {
    ($(#[$doc:meta])* $name:ident, $result:ty) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            #[schema(value_type = bool, example = true)]
            pub success: bool,
            pub errors: Vec<ErrorItem>,
            pub messages: Vec<ErrorItem>,
            pub result: $result,
        }

        impl $name {
            pub fn new(result: $result) -> Self {
                Self { success: true, errors: Vec::new(), messages: Vec::new(), result }
            }
        }
    };
}

success_envelope!(
    /// One custom CSR.
    CsrSingle,
    CsrResult
);
success_envelope!(
    /// A create accepted but not finished within the wait budget (202).
    CsrPending,
    PendingResult
);
success_envelope!(
    /// The id of a deleted custom CSR.
    CsrIdOnly,
    IdOnly
);

#[derive(Debug, Serialize, ToSchema)]
pub struct IdOnly {
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResultInfo {
    pub page: u64,
    pub per_page: u64,
    /// Items on this page.
    pub count: u64,
    pub total_count: u64,
    pub total_pages: u64,
}

/// A page of custom CSRs.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsrCollection {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<CsrResult>,
    pub result_info: ResultInfo,
}

success_envelope!(
    /// One batch, with its progress.
    BatchSingle,
    BatchResult
);

/// A page of batches.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCollection {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<BatchResult>,
    pub result_info: ResultInfo,
}

/// A page of a batch's results, in item order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<BatchEntryResult>,
    pub result_info: ResultInfo,
}
