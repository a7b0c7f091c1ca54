//! Department times to RFC 3339.
//!
//! Department systems send times as RFC 3339, or as local wall-clock time
//! (`2025-08-01 14:05:00`, `2025-08-01T14:05:00`) without an offset. The
//! latter gets the adapter's `utc_offset` config (default `+08:00`).

use crate::AdapterError;
use time::format_description::well_known::Rfc3339;

/// `value` as RFC 3339. A malformed time is [`AdapterError::InvalidInput`]
/// naming `field`; a malformed `utc_offset` config is
/// [`AdapterError::Unavailable`] (fix the manifest, then it heals).
pub fn normalize(value: &str, field: &str) -> Result<String, AdapterError> {
    let t = value.trim();
    if time::OffsetDateTime::parse(t, &Rfc3339).is_ok() {
        return Ok(t.to_string());
    }
    let local = time::macros::format_description!(
        "[year]-[month]-[day][first [ ][T]][hour]:[minute]:[second]"
    );
    if time::PrimitiveDateTime::parse(t, local).is_err() {
        return Err(AdapterError::InvalidInput(format!(
            "field `{field}`: `{t}` is neither RFC 3339 nor `YYYY-MM-DD HH:MM:SS`"
        )));
    }
    let offset = crate::config::get("utc_offset").unwrap_or_else(|| "+08:00".to_string());
    let stamped = format!("{}T{}{offset}", &t[..10], &t[11..]);
    if time::OffsetDateTime::parse(&stamped, &Rfc3339).is_ok() {
        Ok(stamped)
    } else {
        Err(AdapterError::Unavailable(format!(
            "config key `utc_offset`: `{offset}` is not an offset like +08:00"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_rfc3339_times() {
        assert_eq!(
            normalize("2025-08-01T14:05:00Z", "t").unwrap(),
            "2025-08-01T14:05:00Z"
        );
        assert_eq!(
            normalize("2025-08-01 14:05:00", "t").unwrap(),
            "2025-08-01T14:05:00+08:00"
        );
        assert_eq!(
            normalize("2025-08-01T14:05:00", "t").unwrap(),
            "2025-08-01T14:05:00+08:00"
        );
        assert!(
            matches!(normalize("noon", "call_time"), Err(AdapterError::InvalidInput(m)) if m.contains("`call_time`"))
        );
    }
}
