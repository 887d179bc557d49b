//! `application/x-www-form-urlencoded`: how Twilio sends webhook parameters and
//! how its REST API takes them (the WHATWG URL standard's urlencoded parser and
//! serializer).

/// The name/value pairs of a urlencoded string, in order, repeats kept.
///
/// Like the WHATWG parser it never fails: `+` is a space, a `%` without two hex
/// digits after it stays as it is, and bytes that are not UTF-8 become U+FFFD. A
/// tampered body then fails the signature check (401) rather than the parser.
pub fn parse(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (decode(&pair[..i]), decode(&pair[i + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(hex_byte)) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
}

/// The urlencoded form of `pairs`, in the order given.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode_part(name), encode_part(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query of a URL: after the first `?`, before any `#`.
pub fn query(url: &str) -> &str {
    let without_fragment = url.split('#').next().unwrap_or("");
    without_fragment
        .split_once('?')
        .map_or("", |(_, query)| query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Parameters named as on Twilio's "Twilio's request to your incoming message
    /// Webhook URL" page, encoded as a browser form would: `+` for a space, `%2B`
    /// for a plus sign, UTF-8 percent-encoded.
    #[test]
    fn parses_twilio_webhook_bodies() {
        let body = b"SmsMessageSid=SM1&NumMedia=0&ProfileName=Bea+Smith&From=whatsapp%3A%2B14155238886&Body=Ceremony+at+4%3F+%F0%9F%92%8D&Empty=&Flag";
        assert_eq!(
            parse(body),
            pairs(&[
                ("SmsMessageSid", "SM1"),
                ("NumMedia", "0"),
                ("ProfileName", "Bea Smith"),
                ("From", "whatsapp:+14155238886"),
                ("Body", "Ceremony at 4? 💍"),
                ("Empty", ""),
                ("Flag", ""),
            ])
        );
    }

    #[test]
    fn malformed_escapes_are_kept_and_never_fail() {
        assert_eq!(
            parse(b"a=100%&b=%zz&c=%4"),
            pairs(&[("a", "100%"), ("b", "%zz"), ("c", "%4")])
        );
        assert_eq!(parse(b"a=%FF"), pairs(&[("a", "\u{FFFD}")]));
        assert_eq!(parse(b"&&"), Vec::new());
    }

    #[test]
    fn encoding_round_trips() {
        let form = encode(&[
            ("To", "whatsapp:+15551234567"),
            ("Body", "Vows at 3 & toast 💍"),
        ]);
        assert_eq!(
            form,
            "To=whatsapp%3A%2B15551234567&Body=Vows+at+3+%26+toast+%F0%9F%92%8D"
        );
        assert_eq!(
            parse(form.as_bytes()),
            pairs(&[
                ("To", "whatsapp:+15551234567"),
                ("Body", "Vows at 3 & toast 💍")
            ])
        );
    }

    #[test]
    fn query_is_between_question_mark_and_fragment() {
        assert_eq!(
            query("https://h/p?bodySHA256=ab&x=1#rc=2"),
            "bodySHA256=ab&x=1"
        );
        assert_eq!(query("https://h/p"), "");
        assert_eq!(query("https://h/p#a?b"), "");
    }
}
