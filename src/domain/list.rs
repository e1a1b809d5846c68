//! List parameters: `page`, `per_page`, `order`, `direction`, validated once at the edge.

use super::{ErrorCode, FieldError, OwnerKind, ValidationErrors};

pub const MIN_PER_PAGE: u64 = 5;
pub const MAX_PER_PAGE: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    Name,
    AccountTag,
    CreatedAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

impl Direction {
    pub fn reversed(self) -> Self {
        match self {
            Direction::Asc => Direction::Desc,
            Direction::Desc => Direction::Asc,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub page: u64,
    pub per_page: u64,
    pub order: SortField,
    pub direction: Direction,
}

impl ListQuery {
    /// Cloudflare's defaults: 50 per page for accounts, 20 for zones; by `created_at` ascending.
    pub fn defaults(kind: OwnerKind) -> Self {
        Self {
            page: 1,
            per_page: match kind {
                OwnerKind::Account => 50,
                OwnerKind::Zone => 20,
            },
            order: SortField::CreatedAt,
            direction: Direction::Asc,
        }
    }

    /// Parses query pairs; unknown parameters are ignored, as Cloudflare does.
    pub fn parse<'a>(
        kind: OwnerKind,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationErrors> {
        let mut q = Self::defaults(kind);
        let mut errors = Vec::new();
        for (key, value) in pairs {
            let bad =
                |msg: String| FieldError::new(ErrorCode::InvalidRequest, format!("?{key}"), msg);
            match key {
                "page" => match parse_number(value) {
                    Some(n) if n >= 1 => q.page = n,
                    _ => errors.push(bad(format!("page must be a number of at least 1, got {value:?}"))),
                },
                "per_page" => match parse_number(value) {
                    Some(n) if (MIN_PER_PAGE..=MAX_PER_PAGE).contains(&n) => q.per_page = n,
                    _ => errors.push(bad(format!(
                        "per_page must be a number from {MIN_PER_PAGE} to {MAX_PER_PAGE}, got {value:?}"
                    ))),
                },
                "order" => match value {
                    "name" => q.order = SortField::Name,
                    "account_tag" => q.order = SortField::AccountTag,
                    "created_at" => q.order = SortField::CreatedAt,
                    _ => errors.push(bad(format!("order must be name, account_tag or created_at, got {value:?}"))),
                },
                "direction" => match value {
                    "asc" => q.direction = Direction::Asc,
                    "desc" => q.direction = Direction::Desc,
                    _ => errors.push(bad(format!("direction must be asc or desc, got {value:?}"))),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// Rows to skip; saturates, so an absurd page is simply past the end.
    pub fn offset(&self) -> i64 {
        i64::try_from((self.page - 1).saturating_mul(self.per_page)).unwrap_or(i64::MAX)
    }
}

/// Cloudflare's schema types `page` and `per_page` as numbers: integers are taken as they are,
/// and so is a whole number written as a float (`2.0` is page 2). A fraction (`2.5`) or an
/// integer past `u64` is refused rather than silently rounded or clamped.
fn parse_number(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok();
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0)
        .then_some(f as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: OwnerKind, qs: &[(&str, &str)]) -> Result<ListQuery, Vec<u32>> {
        ListQuery::parse(kind, qs.iter().copied()).map_err(|e| e.codes())
    }

    #[test]
    fn defaults_differ_for_accounts_and_zones() {
        assert_eq!(parse(OwnerKind::Account, &[]).unwrap().per_page, 50);
        assert_eq!(parse(OwnerKind::Zone, &[]).unwrap().per_page, 20);
        let q = parse(OwnerKind::Account, &[]).unwrap();
        assert_eq!(
            (q.page, q.order, q.direction),
            (1, SortField::CreatedAt, Direction::Asc)
        );
    }

    #[test]
    fn accepts_valid_values_and_numbers_written_as_floats() {
        let q = parse(
            OwnerKind::Account,
            &[
                ("page", "3"),
                ("per_page", "5.0"),
                ("order", "name"),
                ("direction", "desc"),
                ("x", "y"),
            ],
        )
        .unwrap();
        assert_eq!(
            (q.page, q.per_page, q.order, q.direction),
            (3, 5, SortField::Name, Direction::Desc)
        );
        assert_eq!(q.offset(), 10);
        assert_eq!(parse(OwnerKind::Zone, &[("page", "2.0")]).unwrap().page, 2);
    }

    #[test]
    fn rejects_out_of_range_or_malformed_values() {
        for qs in [
            [("page", "0")],
            [("page", "-1")],
            [("page", "abc")],
            [("page", "")],
            [("page", "NaN")],
            [("per_page", "4")],
            [("per_page", "51")],
            [("page", "2.5")],
            [("per_page", "10.5")],
            [("page", "18446744073709551616")],
            [("page", "1e300")],
            [("order", "common_name")],
            [("direction", "up")],
        ] {
            assert_eq!(parse(OwnerKind::Account, &qs), Err(vec![1400]), "{qs:?}");
        }
    }

    #[test]
    fn huge_pages_within_u64_saturate_the_offset_instead_of_overflowing() {
        let q = parse(OwnerKind::Account, &[("page", "18446744073709551615")]).unwrap();
        assert_eq!(q.offset(), i64::MAX);
    }
}
