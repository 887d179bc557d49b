//! The sync cursor: where the next events.list call continues. Opaque to the
//! host; JSON here.
//!
//! Google's sync has two tokens ("Synchronize resources efficiently",
//! developers.google.com/calendar/api/guides/sync): a `pageToken` while a
//! result spans pages, and the `nextSyncToken` of a result's last page, which
//! the next incremental sync sends as `syncToken`. While paging through an
//! incremental result the sync token in use is sent again with each page, as
//! the guide's own sample does, so the cursor carries both.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The sync token of an incremental sync; none in a full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// The next page of the current result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

impl Cursor {
    /// The first page of a full sync.
    pub fn full() -> Self {
        Self::default()
    }

    /// A cursor of ours, or `None` for anything else (an older plugin's, a
    /// damaged one): the caller then starts over with a full sync.
    pub fn decode(s: &str) -> Option<Self> {
        serde_json::from_str::<Self>(s)
            .ok()
            .filter(|c| c.sync_token.is_some() || c.page_token.is_some())
    }

    /// Where a sync given `cursor` starts, and whether that is over (a full
    /// sync with `reset`, for a cursor this plugin cannot read).
    pub fn resume(cursor: Option<&str>) -> (Self, bool) {
        match cursor.map(Self::decode) {
            None => (Self::full(), false),
            Some(Some(c)) => (c, false),
            Some(None) => (Self::full(), true),
        }
    }

    pub fn encode(&self) -> String {
        // A struct of two optional strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The cursor after a page: its next page while there is one (with the sync
    /// token in use), else the next incremental sync's; none when Google gave
    /// neither token (the next sync is then a full one).
    pub fn after(
        &self,
        next_page_token: Option<String>,
        next_sync_token: Option<String>,
    ) -> Option<Self> {
        match (next_page_token, next_sync_token) {
            (Some(page), _) => Some(Self {
                sync_token: self.sync_token.clone(),
                page_token: Some(page),
            }),
            (None, Some(sync)) => Some(Self {
                sync_token: Some(sync),
                page_token: None,
            }),
            (None, None) => None,
        }
    }

    /// The query of the events.list call this cursor asks for. The same
    /// parameters for full and incremental syncs, as the guide requires ("all
    /// other query parameters should be the same as for the initial
    /// synchronization"); none of those refused beside a sync token (`timeMin`,
    /// `timeMax`, `q`, `updatedMin`, `orderBy`, `iCalUID`, extended properties).
    pub fn query(&self, max_results: u32) -> String {
        let mut query = format!("singleEvents=true&maxResults={max_results}");
        if let Some(t) = &self.sync_token {
            query.push_str("&syncToken=");
            query.push_str(&crate::api::encode_component(t));
        }
        if let Some(t) = &self.page_token {
            query.push_str("&pageToken=");
            query.push_str(&crate::api::encode_component(t));
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = Cursor {
            sync_token: Some("CPDAlvWDx70CEPDAlvWDx70CGAU=".into()),
            page_token: Some("p2".into()),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let s = Cursor {
            sync_token: Some("s".into()),
            page_token: None,
        };
        assert_eq!(s.encode(), r#"{"sync_token":"s"}"#);
        for bad in [
            "",
            "{}",
            "null",
            "CPDAlvWDx70CEPDAlvWDx70CGAU=",
            r#"{"delta":"x"}"#,
            r#"{"sync_token":5}"#,
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn syncs_resume_at_their_cursor_and_start_over_at_a_strange_one() {
        assert_eq!(Cursor::resume(None), (Cursor::full(), false));
        let c = Cursor {
            sync_token: Some("s".into()),
            page_token: None,
        };
        assert_eq!(Cursor::resume(Some(&c.encode())), (c, false));
        assert_eq!(
            Cursor::resume(Some("opaque-delta-link")),
            (Cursor::full(), true)
        );
    }

    #[test]
    fn pages_keep_the_sync_token_in_use_and_the_last_page_gives_the_next() {
        let full = Cursor::full();
        let page2 = full.after(Some("p2".into()), None).unwrap();
        assert_eq!(
            page2,
            Cursor {
                sync_token: None,
                page_token: Some("p2".into())
            }
        );
        let next = page2.after(None, Some("s1".into())).unwrap();
        assert_eq!(
            next,
            Cursor {
                sync_token: Some("s1".into()),
                page_token: None
            }
        );
        let incremental_page2 = next.after(Some("q2".into()), None).unwrap();
        assert_eq!(incremental_page2.sync_token.as_deref(), Some("s1"));
        assert_eq!(incremental_page2.page_token.as_deref(), Some("q2"));
        // A page token wins over a sync token given with it: more pages follow.
        assert_eq!(
            next.after(Some("q2".into()), Some("s2".into()))
                .unwrap()
                .page_token
                .as_deref(),
            Some("q2")
        );
        assert_eq!(next.after(None, None), None);
    }

    #[test]
    fn queries_are_the_same_for_full_and_incremental_syncs() {
        assert_eq!(
            Cursor::full().query(250),
            "singleEvents=true&maxResults=250"
        );
        let c = Cursor {
            sync_token: Some("a+b=".into()),
            page_token: Some("c/d".into()),
        };
        assert_eq!(
            c.query(250),
            "singleEvents=true&maxResults=250&syncToken=a%2Bb%3D&pageToken=c%2Fd"
        );
    }
}
