//! Fuzz target: Twilio's urlencoded webhook bodies and signed URLs.
//!
//! ```sh
//! cargo bolero test -p presence-fuzz --test twilio twilio_forms -T 600
//! ```

/// Twilio's urlencoded webhook bodies: parsing never fails, what we encode
/// parses back to the same pairs, and the signed string is the URL first.
#[test]
fn twilio_forms() {
    presence_fuzz::fuzz!((Vec<(String, String)>, Vec<u8>, String), |(
        pairs,
        raw,
        url,
    )| {
        let _ = twilio::form::parse(raw);
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let encoded = twilio::form::encode(&borrowed);
        let back = twilio::form::parse(encoded.as_bytes());
        assert_eq!(back, *pairs, "{encoded}");
        let signed = twilio::webhook::signed_string(url, &back);
        assert!(signed.starts_with(url.as_str()));
        let variants = twilio::webhook::url_variants(url);
        assert_eq!(variants[0], *url);
        let _ = twilio::webhook::body_sha256_param(url);
        let _ = twilio::webhook::delivery_id(&back);
    });
}
