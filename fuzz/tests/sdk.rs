//! Fuzz targets: the guest SDK's helpers every plugin uses on outside input.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test sdk sdk_encodings_and_headers -T 600
//! ```

/// Signature encodings, timestamps and `Retry-After` values from outside.
#[test]
fn sdk_encodings_and_headers() {
    use presence_sdk::signature::{check_freshness, decode_base64, decode_hex, encode_hex};
    use presence_sdk::upstream::retry_after_ms_at;
    presence_fuzz::fuzz!((Vec<u8>, String, i64, i64, String), |(
        bytes,
        text,
        timestamp,
        now,
        retry_after,
    )| {
        assert_eq!(decode_hex(&encode_hex(bytes)).as_deref(), Some(&bytes[..]));
        let _ = decode_hex(text);
        let _ = decode_base64(text);
        // Any timestamp a sender writes, however absurd, is judged without overflow.
        let fresh = check_freshness(*timestamp, 300).is_ok();
        let now_s = i128::from(presence_sdk::now_ms() / 1000);
        let age = (now_s - i128::from(*timestamp)).abs();
        if age > 302 {
            assert!(!fresh, "{timestamp} judged fresh");
        } else if age < 298 {
            assert!(fresh, "{timestamp} judged stale");
        }
        let headers = vec![("Retry-After".to_string(), retry_after.clone())];
        let _ = retry_after_ms_at(&headers, *now);
    });
}

/// Status texts cut to a provider's limits: never above the limit, never
/// split inside a character.
#[test]
fn sdk_truncation() {
    use presence_sdk::text::{
        truncate_bytes_with_ellipsis, truncate_chars, truncate_with_ellipsis,
    };
    presence_fuzz::fuzz!((String, u8), |(text, max)| {
        let max = *max as usize;
        assert!(truncate_chars(text, max).chars().count() <= max);
        assert!(truncate_with_ellipsis(text, max).chars().count() <= max);
        let cut = truncate_bytes_with_ellipsis(text, max);
        assert!(cut.len() <= max, "{text:?} {max}: {cut:?}");
    });
}
