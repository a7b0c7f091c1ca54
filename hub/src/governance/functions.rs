//! What the hub does to a labelled value before a recipient sees it:
//! `mask` it by character, `pseudonymize` it under the recipient's key,
//! `generalize` it (a place to its grid, a birth date to its year), or
//! drop it. Native code, run by the hub; adapters never decide.
//!
//! Masks keep what a person needs to recognise a record and no more:
//! - a name keeps its surname (`张**`, a compound surname whole: `欧阳*`);
//! - a mobile keeps its first 3 and last 4 digits (`138****1234`);
//! - an ID number keeps its first 6 and last 4 characters. The first six
//!   are the county-level division where the person's household is
//!   registered (`330109` is Xiaoshan): a masked ID still tells where
//!   someone comes from. Grant `pseudonymize` where that is too much;
//! - a plate keeps its province and the letter of its city (`浙A*****`);
//! - an address keeps its first six characters (the city and district);
//! - free text has the phone numbers, ID numbers and plates in it masked.

use super::policy::Category;
use std::sync::OnceLock;

/// Chinese compound surnames (复姓) a masked name keeps whole.
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "司空", "夏侯", "轩辕", "令狐", "端木", "申屠", "西门", "南宫", "独孤", "呼延", "万俟", "闻人",
    "澹台", "公冶", "太史", "百里", "东郭", "钟离", "拓跋", "赫连",
];

/// Provinces' one-character abbreviations, the first character of a plate.
const PROVINCES: &str =
    "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领警学港澳";

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c) || ('\u{3400}'..='\u{4dbf}').contains(&c)
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

/// `张三丰` → `张**`, `欧阳娜娜` → `欧阳**`, `John Smith` → `J*** S****`.
pub fn mask_name(name: &str) -> String {
    let name = name.trim();
    if name.chars().any(is_cjk) {
        let keep = COMPOUND_SURNAMES
            .iter()
            .find(|s| name.starts_with(*s) && name.chars().count() > 2)
            .map(|s| s.chars().count())
            .unwrap_or(1);
        let n = name.chars().count();
        if n <= 1 {
            return stars(n);
        }
        let kept: String = name.chars().take(keep).collect();
        return format!("{kept}{}", stars(n - keep));
    }
    name.split_whitespace()
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => format!("{first}{}", stars(c.count())),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A phone number's digits, without `+86`/`0086` before a mobile number
/// and without separators.
pub fn normalize_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    for prefix in ["0086", "86"] {
        if let Some(rest) = digits.strip_prefix(prefix) {
            if rest.len() == 11 && rest.starts_with('1') {
                return rest.to_string();
            }
        }
    }
    digits
}

/// `+86 138 1234 5678` → `138****5678`; a landline keeps its first 3
/// and last 4 digits too; a short number only its last 2.
pub fn mask_phone(phone: &str) -> String {
    let d = normalize_phone(phone);
    let n = d.len();
    if n >= 7 {
        format!("{}{}{}", &d[..3], stars(n - 7), &d[n - 4..])
    } else if n > 2 {
        format!("{}{}", stars(n - 2), &d[n - 2..])
    } else {
        stars(n)
    }
}

/// An ID number without spaces, its check character upper case.
pub fn normalize_id(id: &str) -> String {
    id.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `33010919900101123X` → `330109********123X`: the first 6 (the county)
/// and last 4 (sequence and check) kept. A 15-digit ID of the old kind
/// has no check character: its last 4 would show a digit of the birth
/// date, so it keeps 3 (`330109900101123` → `330109******123`).
pub fn mask_id(id: &str) -> String {
    let id: Vec<char> = normalize_id(id).chars().collect();
    let n = id.len();
    let (head, tail) = if n == 15 {
        (6, 3)
    } else if n >= 15 {
        (6, 4)
    } else {
        (n.min(2), n.saturating_sub(2).min(2))
    };
    if head + tail >= n {
        return stars(n);
    }
    let head: String = id[..head].iter().collect();
    let tail_s: String = id[n - tail..].iter().collect();
    format!("{head}{}{tail_s}", stars(n - head.chars().count() - tail))
}

/// A plate upper case, without spaces, dots or dashes.
pub fn normalize_plate(plate: &str) -> String {
    plate
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '·' | '.' | '-' | '•'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `浙A12345` → `浙A*****`; a new-energy plate `浙AD12345` → `浙A******`:
/// the province and the city's letter kept.
pub fn mask_plate(plate: &str) -> String {
    let p: Vec<char> = normalize_plate(plate).chars().collect();
    let keep = 2.min(p.len());
    let kept: String = p[..keep].iter().collect();
    format!("{kept}{}", stars(p.len() - keep))
}

/// The first six characters of an address (its city and district), the
/// rest masked.
pub fn mask_address(address: &str) -> String {
    let chars: Vec<char> = address.trim().chars().collect();
    let keep = 6.min(chars.len() / 2);
    let kept: String = chars[..keep].iter().collect();
    format!("{kept}{}", stars(chars.len() - keep))
}

/// A birth date's year: `1990-01-01` → `1990`.
pub fn generalize_birth(date: &str) -> Option<String> {
    let year: String = date.trim().chars().take(4).collect();
    (year.len() == 4 && year.chars().all(|c| c.is_ascii_digit())).then_some(year)
}

/// `1990-01-01` → `1990-**-**`.
pub fn mask_birth(date: &str) -> String {
    match generalize_birth(date) {
        Some(year) => format!("{year}-**-**"),
        None => stars(date.chars().count()),
    }
}

struct Patterns {
    /// All three in one pass: which matched is told by its group.
    any: regex::Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        any: regex::Regex::new(&format!(
            // 18-character IDs (check character X) and 15-digit old ones,
            // whole numbers only (ASCII word boundaries: a Chinese
            // character before the number is not part of it); a mainland
            // mobile, with +86 / 0086 and spaces or dashes, not inside a
            // longer number (a timestamp in milliseconds); a plate.
            r"(?P<id>(?-u:\b)(?:[0-9]{{17}}[0-9Xx]|[0-9]{{15}})(?-u:\b))|(?P<phone>(?:(?:\+|00)86[ \t-]?|(?-u:\b))1[3-9][0-9][ \t-]?[0-9]{{4}}[ \t-]?[0-9]{{4}}(?-u:\b))|(?P<plate>[{PROVINCES}][A-Za-z][·\s]?[A-Za-z0-9]{{5,6}})"
        ))
        .expect("pattern of IDs, phones and plates"),
    })
}

/// Free text with every ID number, phone number and plate in it masked.
pub fn mask_text(text: &str) -> String {
    patterns()
        .any
        .replace_all(text, |c: &regex::Captures| {
            if let Some(m) = c.name("id") {
                mask_id(m.as_str())
            } else if let Some(m) = c.name("phone") {
                mask_phone(m.as_str())
            } else {
                mask_plate(&c[0])
            }
        })
        .into_owned()
}

/// Whether `text` holds a phone number, an ID number or a plate.
pub fn has_patterns(text: &str) -> bool {
    patterns().any.is_match(text)
}

/// `zhang.san@example.com` → `z***@example.com`; anything else keeps its
/// first character.
pub fn mask_contact(contact: &str) -> String {
    let c = contact.trim();
    match c.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => {
            let n = c.chars().count();
            let first: String = c.chars().take(1).collect();
            format!("{first}{}", stars(n.saturating_sub(1)))
        }
    }
}

/// The mask of a value of `category`.
pub fn mask(category: Category, value: &str) -> String {
    match category {
        Category::Name => mask_name(value),
        Category::Phone => mask_phone(value),
        Category::Contact => mask_contact(value),
        Category::Id => mask_id(value),
        Category::Plate => mask_plate(value),
        Category::Address => mask_address(value),
        Category::Birth => mask_birth(value),
        Category::Text => mask_text(value),
        // Faces, places, minors: no mask says less than the value and
        // still means something; the policy allows none (checked at load).
        Category::Face | Category::Location | Category::Minor => stars(value.chars().count()),
    }
}

/// A value as it is compared for a pseudonym: the same person's phone
/// written `+86 138 1234 5678` or `13812345678` gets the same pseudonym.
pub fn normalize(category: Category, value: &str) -> String {
    match category {
        Category::Phone => normalize_phone(value),
        Category::Id => normalize_id(value),
        Category::Plate => normalize_plate(value),
        Category::Contact => value.trim().to_lowercase(),
        _ => value.trim().to_string(),
    }
}

/// A recipient's key for pseudonyms: HMAC-SHA-256 of the recipient and
/// the key's version under the hub's master key, so each recipient's
/// pseudonyms are its own and a new version gives new ones.
pub fn recipient_key(master: &[u8], recipient: &str, version: u32) -> ring::hmac::Key {
    let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, master);
    let derived = ring::hmac::sign(
        &master,
        format!("govhub pseudonym key v{version} for {recipient}").as_bytes(),
    );
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

/// `ps1:` and 32 hex digits: HMAC-SHA-256 of the normalized value under the
/// recipient's key. Stable for one recipient; two recipients' pseudonyms
/// of one person differ, so they cannot join their records on it.
pub fn pseudonymize(
    key: &ring::hmac::Key,
    version: u32,
    category: Category,
    value: &str,
) -> String {
    let mut msg = category.as_str().as_bytes().to_vec();
    msg.push(0);
    msg.extend_from_slice(normalize(category, value).as_bytes());
    let tag = ring::hmac::sign(key, &msg);
    format!("ps{version}:{}", hex::encode(&tag.as_ref()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_on_real_shaped_chinese_samples() {
        for (category, value, masked) in [
            (Category::Name, "张三丰", "张**"),
            (Category::Name, "管九阳", "管**"),
            (Category::Name, "欧阳娜", "欧阳*"),
            (Category::Name, "欧阳娜娜", "欧阳**"),
            (Category::Name, "司马光", "司马*"),
            (Category::Name, "欧阳", "欧*"),
            (Category::Name, "Li Wei", "L* W**"),
            (Category::Phone, "13812341234", "138****1234"),
            (Category::Phone, "+86 138 1234 1234", "138****1234"),
            (Category::Phone, "0086-138-1234-1234", "138****1234"),
            (Category::Phone, "0571-82881234", "057*****1234"),
            (Category::Id, "33010919900101123X", "330109********123X"),
            (Category::Id, "33010919900101123x", "330109********123X"),
            (Category::Id, "330109 19900101 123X", "330109********123X"),
            (Category::Id, "330109900101123", "330109******123"),
            (Category::Plate, "浙A12345", "浙A*****"),
            (Category::Plate, "浙AD12345", "浙A******"),
            (Category::Plate, "浙A·D1234F", "浙A******"),
            (Category::Plate, "浙a 12345", "浙A*****"),
            (
                Category::Address,
                "杭州市萧山区盈丰街道盈一佳苑西门",
                "杭州市萧山区**********",
            ),
            (Category::Birth, "1990-01-01", "1990-**-**"),
            (
                Category::Contact,
                "zhang.san@example.com",
                "z***@example.com",
            ),
        ] {
            assert_eq!(mask(category, value), masked, "{category:?} {value}");
        }
        // What masked values keep is nothing more than said.
        let id = mask(Category::Id, "33010919900101123X");
        assert!(
            !id.contains("19900101"),
            "the birth date stays hidden: {id}"
        );
    }

    #[test]
    fn free_text_has_its_numbers_and_plates_masked() {
        let text = "报警人电话 +86 138-1234-1234，身份证33010919900101123X，车牌浙AD12345，另一手机13900001111。";
        let masked = mask_text(text);
        for clear in ["1234-1234", "19900101", "D12345", "00001111"] {
            assert!(!masked.contains(clear), "`{clear}` in {masked}");
        }
        assert!(
            masked.contains("138****1234") && masked.contains("浙A******"),
            "{masked}"
        );
        assert!(
            masked.contains("报警人电话") && masked.ends_with("。"),
            "{masked}"
        );
        assert!(has_patterns(text) && !has_patterns(&masked));
        // A number that only looks like one inside a longer one is left.
        let ts = "at 1764670000000 ms, delivery 13800";
        assert_eq!(mask_text(ts), ts);
    }

    #[test]
    fn pseudonyms_are_stable_per_recipient_different_across_and_keyed() {
        let master = b"a master key of at least thirty-two bytes";
        let police = recipient_key(master, "police", 1);
        let village = recipient_key(master, "village", 1);
        let a = pseudonymize(&police, 1, Category::Phone, "+86 138 1234 1234");
        let b = pseudonymize(&police, 1, Category::Phone, "13812341234");
        assert_eq!(a, b, "normalized first: one person, one pseudonym");
        assert!(a.starts_with("ps1:") && a.len() == 4 + 32, "{a}");
        let c = pseudonymize(&village, 1, Category::Phone, "13812341234");
        assert_ne!(a, c, "two recipients cannot join on it");
        let id_a = pseudonymize(&police, 1, Category::Id, "33010919900101123x");
        let id_b = pseudonymize(&police, 1, Category::Id, "33010919900101123X");
        assert_eq!(id_a, id_b);
        use sha2::Digest;
        let unkeyed = hex::encode(sha2::Sha256::digest(b"13812341234"));
        assert!(
            !unkeyed.contains(&a[4..]),
            "an unkeyed hash is not the pseudonym"
        );
        let v2 = recipient_key(master, "police", 2);
        assert_ne!(pseudonymize(&v2, 2, Category::Phone, "13812341234"), a);
    }

    #[test]
    fn birth_dates_generalize_to_their_year() {
        assert_eq!(generalize_birth("1990-01-01").as_deref(), Some("1990"));
        assert_eq!(generalize_birth("二〇二〇"), None);
    }
}
