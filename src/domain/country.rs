//! ISO 3166-1 alpha-2 country codes (officially assigned), for the subject's C attribute.

const CODES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER \
ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM \
IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF \
MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK \
PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD \
TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// The canonical (upper-case) code when `s` is an assigned alpha-2 code in either case.
pub fn parse_country(s: &str) -> Option<String> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let upper = s.to_ascii_uppercase();
    let [a, b] = [upper.as_bytes()[0] - b'A', upper.as_bytes()[1] - b'A'];
    (ASSIGNED[usize::from(a)] & (1 << b) != 0).then_some(upper)
}

/// Bit `b` of entry `a` is set when the code of the letters `A + a`, `A + b` is assigned: one
/// lookup per item of a batch instead of a walk through `CODES`.
const ASSIGNED: [u32; 26] = {
    let codes = CODES.as_bytes();
    let mut table = [0u32; 26];
    // Each code is two capital letters, then a space (the last has none).
    let mut i = 0;
    while i + 1 < codes.len() {
        table[(codes[i] - b'A') as usize] |= 1 << (codes[i + 1] - b'A');
        i += 3;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_all_249_assigned_codes() {
        assert_eq!(CODES.split(' ').count(), 249);
        assert_eq!(
            ASSIGNED.iter().map(|row| row.count_ones()).sum::<u32>(),
            249
        );
        for code in CODES.split(' ') {
            assert_eq!(parse_country(code).as_deref(), Some(code));
        }
    }

    #[test]
    fn accepts_assigned_codes_in_any_case_and_rejects_the_rest() {
        assert_eq!(parse_country("US").as_deref(), Some("US"));
        assert_eq!(parse_country("de").as_deref(), Some("DE"));
        assert_eq!(parse_country("XX"), None);
        assert_eq!(parse_country("USA"), None);
        assert_eq!(parse_country("U"), None);
        assert_eq!(parse_country("Ü1"), None);
    }
}
