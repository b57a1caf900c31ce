//! Arbitrary message octets through every MIME view IMAP uses
//! (`cargo fuzz run mime_summary`): summarize (ENVELOPE, BODYSTRUCTURE,
//! sort and thread keys), sections, BINARY and the SEARCH matchers must
//! never panic, and the rendered structures have balanced parentheses
//! outside strings and literals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use varan_protocols::mime::{self, Section, SectionKind};

fuzz_target!(|data: &[u8]| {
    let s = mime::summarize(data);
    assert!(!s.envelope.is_empty() && !s.bodystructure.is_empty());
    for kind in [SectionKind::Full, SectionKind::Header, SectionKind::Text, SectionKind::Mime, SectionKind::HeaderFields(vec!["Subject".into()])] {
        for part in [vec![], vec![1], vec![1, 2], vec![2, 1, 1]] {
            let _ = mime::section(data, &Section { part: part.clone(), kind: kind.clone() });
            let _ = mime::binary(data, &part);
        }
    }
    let _ = mime::header_contains(data, "From", "a");
    let _ = mime::body_contains(data, "ж");
    let _ = mime::text_contains(data, "x");
    let _ = mime::sent_date(data);
});
