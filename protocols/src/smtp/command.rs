//! Command-line parsing: the verb (RFC 5321 §4.1.1), MAIL/RCPT arguments
//! with their ESMTP parameters (RFC 5321 §4.1.2 `Mail-parameters`), BDAT
//! arguments (RFC 3030 §2) and xtext (RFC 3461 §4).
//!
//! Input is one line without its terminator. Parsers borrow from it and
//! return either a typed command or the reply that refuses it; they hold
//! no state and never allocate more than the values they return.

use super::envelope::{BodyType, DsnNotify, DsnRet};
use super::path::{parse_path, Path, PathError};
use super::reply::{self, Reply};

/// Most ESMTP parameters on one MAIL or RCPT. MAIL has six defined here;
/// the cap keeps duplicate detection trivially cheap.
pub const PARAMETERS_MAX: usize = 16;
/// ENVID length limit (RFC 3461 §4.4: at most 100 characters).
pub const ENVID_BYTES_MAX: usize = 100;
/// ORCPT length limit (RFC 3461 §4.2: at most 500 characters).
pub const ORCPT_BYTES_MAX: usize = 500;

/// The commands the session knows (RFC 5321 §4.1.1, RFC 3207, RFC 4954, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}

const VERBS: [(&[u8], Verb); 14] = [
    (b"EHLO", Verb::Ehlo),
    (b"HELO", Verb::Helo),
    (b"MAIL", Verb::Mail),
    (b"RCPT", Verb::Rcpt),
    (b"DATA", Verb::Data),
    (b"BDAT", Verb::Bdat),
    (b"RSET", Verb::Rset),
    (b"NOOP", Verb::Noop),
    (b"QUIT", Verb::Quit),
    (b"VRFY", Verb::Vrfy),
    (b"EXPN", Verb::Expn),
    (b"HELP", Verb::Help),
    (b"STARTTLS", Verb::StartTls),
    (b"AUTH", Verb::Auth),
];

/// Splits a command line into its verb (case-insensitive, RFC 5321 §2.4)
/// and the argument text with surrounding blanks removed. `None` = unknown.
pub(crate) fn split_verb(line: &[u8]) -> (Option<Verb>, &[u8]) {
    let line = trim_blanks(line);
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let (word, args) = line.split_at(end);
    let verb = VERBS.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)).map(|&(_, v)| v);
    (verb, trim_blanks(args))
}

/// Refuses NUL and other control characters anywhere, and 8-bit octets
/// outside MAIL/RCPT, where only an SMTPUTF8 address may carry them
/// (RFC 6531 §3.3). 500 5.5.2.
pub(crate) fn check_characters(line: &[u8], verb: Option<Verb>) -> Result<(), Reply> {
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(reply::BAD_CHARACTER);
    }
    if !line.is_ascii() && !matches!(verb, Some(Verb::Mail | Verb::Rcpt)) {
        return Err(reply::BAD_CHARACTER);
    }
    Ok(())
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `MAIL FROM:<path> [params]`.
#[derive(Debug)]
pub(crate) struct MailCommand {
    pub path: Path,
    pub non_ascii: bool,
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<DsnRet>,
    pub envid: Option<String>,
}

/// `RCPT TO:<path> [params]`.
#[derive(Debug)]
pub(crate) struct RcptCommand {
    pub path: Path,
    pub non_ascii: bool,
    pub notify: Option<Vec<DsnNotify>>,
    pub orcpt: Option<String>,
}

/// Parses MAIL arguments. `extended`: the session began with EHLO, so
/// ESMTP parameters are allowed (RFC 5321 §4.1.1.2). The SIZE limit and
/// the SMTPUTF8 requirement are the caller's checks.
pub(crate) fn parse_mail(args: &[u8], extended: bool) -> Result<MailCommand, Reply> {
    let path_text = strip_keyword(args, b"FROM:").ok_or(reply::MAIL_SYNTAX)?;
    let parsed = parse_path(path_text).map_err(path_error(reply::MAIL_SYNTAX))?;
    if parsed.path == Path::Postmaster {
        return Err(reply::BAD_ADDRESS);
    }
    let mut cmd = MailCommand { path: parsed.path, non_ascii: parsed.non_ascii, size: None, body: BodyType::SevenBit, smtputf8: false, ret: None, envid: None };
    let params = split_parameters(parsed.rest, extended)?;
    let mut seen_body = false;
    let mut seen_auth = false;
    for (keyword, value) in params {
        let upper = keyword.to_ascii_uppercase();
        match (upper.as_slice(), value) {
            (b"SIZE", Some(v)) if cmd.size.is_none() => cmd.size = Some(parse_size(v)?),
            (b"BODY", Some(v)) if !seen_body => {
                seen_body = true;
                cmd.body = parse_body(v)?;
            }
            (b"SMTPUTF8", None) if !cmd.smtputf8 => cmd.smtputf8 = true,
            (b"RET", Some(v)) if cmd.ret.is_none() => cmd.ret = Some(parse_ret(v)?),
            (b"ENVID", Some(v)) if cmd.envid.is_none() => cmd.envid = Some(parse_xtext_value(v, ENVID_BYTES_MAX)?),
            // RFC 4954 §5: accepted and ignored; we do not relay it onwards.
            (b"AUTH", Some(v)) if !seen_auth => {
                seen_auth = true;
                parse_xtext_value(v, ENVID_BYTES_MAX * 5)?;
            }
            (b"SIZE" | b"BODY" | b"SMTPUTF8" | b"RET" | b"ENVID" | b"AUTH", _) => return Err(reply::SYNTAX),
            _ => return Err(reply::UNSUPPORTED_PARAMETER),
        }
    }
    Ok(cmd)
}

/// Parses RCPT arguments (RFC 5321 §4.1.1.3, DSN parameters RFC 3461 §4.1–4.2).
pub(crate) fn parse_rcpt(args: &[u8], extended: bool) -> Result<RcptCommand, Reply> {
    let path_text = strip_keyword(args, b"TO:").ok_or(reply::RCPT_SYNTAX)?;
    let parsed = parse_path(path_text).map_err(path_error(reply::RCPT_SYNTAX))?;
    if parsed.path == Path::Null {
        return Err(reply::BAD_ADDRESS);
    }
    let mut cmd = RcptCommand { path: parsed.path, non_ascii: parsed.non_ascii, notify: None, orcpt: None };
    for (keyword, value) in split_parameters(parsed.rest, extended)? {
        let upper = keyword.to_ascii_uppercase();
        match (upper.as_slice(), value) {
            (b"NOTIFY", Some(v)) if cmd.notify.is_none() => cmd.notify = Some(parse_notify(v)?),
            (b"ORCPT", Some(v)) if cmd.orcpt.is_none() => cmd.orcpt = Some(parse_orcpt(v)?),
            (b"NOTIFY" | b"ORCPT", _) => return Err(reply::SYNTAX),
            _ => return Err(reply::UNSUPPORTED_PARAMETER),
        }
    }
    Ok(cmd)
}

/// `BDAT chunk-size [SP "LAST"]` (RFC 3030 §2). `None` = syntax error.
pub(crate) fn parse_bdat(args: &[u8]) -> Option<(u64, bool)> {
    let end = args.iter().position(|&b| b == b' ').unwrap_or(args.len());
    let (digits, rest) = args.split_at(end);
    let size = parse_decimal(digits)?;
    match trim_blanks(rest) {
        b"" => Some((size, false)),
        last if last.eq_ignore_ascii_case(b"LAST") => Some((size, true)),
        _ => None,
    }
}

/// Decodes xtext (RFC 3461 §4): `+XX` hex escapes, other octets literal.
/// `None` when malformed.
pub fn xtext_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if (33..=126).contains(&b) && b != b'=' {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// `FROM:` / `TO:` (case-insensitive), then the path. Blanks after the
/// colon are tolerated: many clients send `MAIL FROM: <a@b>`.
fn strip_keyword<'a>(args: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| trim_blanks(&args[keyword.len()..]))
}

fn path_error(syntax: Reply) -> impl FnOnce(PathError) -> Reply {
    move |e| match e {
        PathError::Syntax => syntax,
        PathError::BadAddress => reply::BAD_ADDRESS,
    }
}

type Parameter<'a> = (&'a [u8], Option<&'a [u8]>);

/// `esmtp-param = esmtp-keyword ["=" esmtp-value]`, separated by SP
/// (RFC 5321 §4.1.2). Text after the path must start with a blank.
fn split_parameters(rest: &[u8], extended: bool) -> Result<Vec<Parameter<'_>>, Reply> {
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if !matches!(rest.first(), Some(b' ' | b'\t')) {
        return Err(reply::SYNTAX);
    }
    if !extended {
        // Parameters are an ESMTP feature: only after EHLO.
        return Err(reply::UNSUPPORTED_PARAMETER);
    }
    let mut params = Vec::new();
    for word in rest.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty()) {
        if params.len() == PARAMETERS_MAX {
            return Err(reply::SYNTAX);
        }
        let (keyword, value) = match memchr::memchr(b'=', word) {
            Some(eq) => (&word[..eq], Some(&word[eq + 1..])),
            None => (word, None),
        };
        let keyword_ok = keyword.first().is_some_and(u8::is_ascii_alphanumeric) && keyword.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value.is_none_or(|v| !v.is_empty() && v.iter().all(|&b| (33..=126).contains(&b) && b != b'='));
        if !keyword_ok || !value_ok {
            return Err(reply::SYNTAX);
        }
        params.push((keyword, value));
    }
    Ok(params)
}

/// 1*20DIGIT; 20 digits always fit in a u64 only up to u64::MAX, larger
/// values saturate (and then fail the SIZE check with 552).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

fn parse_size(v: &[u8]) -> Result<u64, Reply> {
    parse_decimal(v).ok_or(reply::SYNTAX)
}

fn parse_body(v: &[u8]) -> Result<BodyType, Reply> {
    if v.eq_ignore_ascii_case(b"7BIT") {
        Ok(BodyType::SevenBit)
    } else if v.eq_ignore_ascii_case(b"8BITMIME") {
        Ok(BodyType::EightBitMime)
    } else if v.eq_ignore_ascii_case(b"BINARYMIME") {
        // RFC 3030 §3: only valid when BINARYMIME is advertised; it is not.
        Err(reply::UNSUPPORTED_PARAMETER)
    } else {
        Err(reply::SYNTAX)
    }
}

fn parse_ret(v: &[u8]) -> Result<DsnRet, Reply> {
    if v.eq_ignore_ascii_case(b"FULL") {
        Ok(DsnRet::Full)
    } else if v.eq_ignore_ascii_case(b"HDRS") {
        Ok(DsnRet::Hdrs)
    } else {
        Err(reply::SYNTAX)
    }
}

/// NOTIFY = "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) (RFC 3461 §4.1).
fn parse_notify(v: &[u8]) -> Result<Vec<DsnNotify>, Reply> {
    let mut list = Vec::new();
    for item in v.split(|&b| b == b',') {
        let n = match item.to_ascii_uppercase().as_slice() {
            b"NEVER" => DsnNotify::Never,
            b"SUCCESS" => DsnNotify::Success,
            b"FAILURE" => DsnNotify::Failure,
            b"DELAY" => DsnNotify::Delay,
            _ => return Err(reply::SYNTAX),
        };
        if !list.contains(&n) {
            list.push(n);
        }
    }
    if list.contains(&DsnNotify::Never) && list.len() > 1 {
        return Err(reply::SYNTAX);
    }
    Ok(list)
}

/// ORCPT = addr-type ";" xtext (RFC 3461 §4.2), addr-type an atom.
fn parse_orcpt(v: &[u8]) -> Result<String, Reply> {
    let text = parse_xtext_value(v, ORCPT_BYTES_MAX)?;
    let (kind, address) = text.split_once(';').ok_or(reply::SYNTAX)?;
    if kind.is_empty() || !kind.bytes().all(super::path::is_atext) || address.is_empty() {
        return Err(reply::SYNTAX);
    }
    Ok(text)
}

/// Validates an xtext value and returns it still encoded.
fn parse_xtext_value(v: &[u8], max: usize) -> Result<String, Reply> {
    let text = std::str::from_utf8(v).map_err(|_| reply::SYNTAX)?;
    if v.len() > max || xtext_decode(text).is_none() {
        return Err(reply::SYNTAX);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(split_verb(b"ehlo client.example"), (Some(Verb::Ehlo), &b"client.example"[..]));
        assert_eq!(split_verb(b"StartTLS"), (Some(Verb::StartTls), &b""[..]));
        assert_eq!(split_verb(b"DATA  "), (Some(Verb::Data), &b""[..]));
        assert_eq!(split_verb(b"XYZZY").0, None);
        assert_eq!(split_verb(b"").0, None);
        assert_eq!(split_verb(b"MAILFROM:<a@b>").0, None);
    }

    #[test]
    fn character_checks() {
        assert!(check_characters(b"NOOP a\0b", Some(Verb::Noop)).is_err());
        assert!(check_characters(b"NOOP a\rb", Some(Verb::Noop)).is_err());
        assert!(check_characters("NOOP é".as_bytes(), Some(Verb::Noop)).is_err());
        assert!(check_characters("MAIL FROM:<é@x.org>".as_bytes(), Some(Verb::Mail)).is_ok());
    }

    #[test]
    fn mail_parameters() {
        let m = parse_mail(b"FROM:<a@b.example> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>", true).unwrap();
        assert_eq!(m.size, Some(1000));
        assert_eq!(m.body, BodyType::EightBitMime);
        assert!(m.smtputf8);
        assert_eq!(m.ret, Some(DsnRet::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("QQ+2B1"));
        assert_eq!(parse_mail(b"from: <>", true).unwrap().path, Path::Null);
        assert_eq!(parse_mail(b"FROM:<> BODY=BINARYMIME", true).unwrap_err().code, 555);
        assert_eq!(parse_mail(b"FROM:<> FOO=1", true).unwrap_err().code, 555);
        assert_eq!(parse_mail(b"FROM:<> SIZE=1", false).unwrap_err().code, 555);
        for bad in ["FROM:<> SIZE=x", "FROM:<> SIZE", "FROM:<> SIZE=1 SIZE=2", "FROM:<> SMTPUTF8=yes", "FROM:<> ENVID=a+zz", "FROM:<>x", "FROM:a@b", "TO:<a@b>"] {
            assert_eq!(parse_mail(bad.as_bytes(), true).unwrap_err().code, 501, "{bad}");
        }
        assert_eq!(parse_mail(b"FROM:<postmaster>", true).unwrap_err().code, 553);
    }

    #[test]
    fn rcpt_parameters() {
        let r = parse_rcpt(b"TO:<a@b.example> NOTIFY=SUCCESS,delay ORCPT=rfc822;a+40b.example", true).unwrap();
        assert_eq!(r.notify, Some(vec![DsnNotify::Success, DsnNotify::Delay]));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a+40b.example"));
        assert_eq!(parse_rcpt(b"TO:<a@b> NOTIFY=NEVER", true).unwrap().notify, Some(vec![DsnNotify::Never]));
        assert_eq!(parse_rcpt(b"TO:<a@b> NOTIFY=NEVER,DELAY", true).unwrap_err().code, 501);
        assert_eq!(parse_rcpt(b"TO:<a@b> ORCPT=nosemicolon", true).unwrap_err().code, 501);
        assert_eq!(parse_rcpt(b"TO:<a@b> SIZE=1", true).unwrap_err().code, 555);
        assert_eq!(parse_rcpt(b"TO:<>", true).unwrap_err().code, 553);
        assert_eq!(parse_rcpt(b"TO:<Postmaster>", true).unwrap().path, Path::Postmaster);
    }

    #[test]
    fn dsn_limits_and_duplicates() {
        // RFC 3461 §4.4: ENVID at most 100 characters; §4.2: ORCPT at most 500.
        let envid = |n: usize| format!("FROM:<a@b> ENVID={}", "e".repeat(n));
        assert_eq!(parse_mail(envid(ENVID_BYTES_MAX).as_bytes(), true).unwrap().envid.map(|e| e.len()), Some(ENVID_BYTES_MAX));
        let too_long = parse_mail(envid(ENVID_BYTES_MAX + 1).as_bytes(), true).unwrap_err();
        assert_eq!((too_long.code, too_long.enhanced), (501, (5, 5, 4)));
        let orcpt = |n: usize| format!("TO:<a@b> ORCPT=rfc822;{}", "o".repeat(n - 7));
        assert!(parse_rcpt(orcpt(ORCPT_BYTES_MAX).as_bytes(), true).is_ok());
        assert_eq!(parse_rcpt(orcpt(ORCPT_BYTES_MAX + 1).as_bytes(), true).unwrap_err().code, 501);
        for dup in ["FROM:<> RET=FULL RET=HDRS", "FROM:<> ENVID=a ENVID=b", "FROM:<> RET=ALL", "FROM:<> RET"] {
            let e = parse_mail(dup.as_bytes(), true).unwrap_err();
            assert_eq!((e.code, e.enhanced), (501, (5, 5, 4)), "{dup}");
        }
        for dup in [
            "TO:<a@b> NOTIFY=DELAY NOTIFY=FAILURE",
            "TO:<a@b> ORCPT=rfc822;x ORCPT=rfc822;y",
            "TO:<a@b> NOTIFY=SOMETIMES",
            "TO:<a@b> NOTIFY=",
            "TO:<a@b> ORCPT=;x",
            "TO:<a@b> ORCPT=rfc822;",
            "TO:<a@b> ORCPT=rfc822;a+4",
        ] {
            let e = parse_rcpt(dup.as_bytes(), true).unwrap_err();
            assert_eq!((e.code, e.enhanced), (501, (5, 5, 4)), "{dup}");
        }
        // Unknown parameters, and DSN parameters without EHLO: 555 5.5.4.
        let e = parse_rcpt(b"TO:<a@b> XNOTIFY=1", true).unwrap_err();
        assert_eq!((e.code, e.enhanced), (555, (5, 5, 4)));
        assert_eq!(parse_rcpt(b"TO:<a@b> NOTIFY=NEVER", false).unwrap_err().code, 555);
        // ORCPT keeps the xtext as received; decoding is the caller's.
        let r = parse_rcpt(b"TO:<a@b> ORCPT=rfc822;b+2Bc+40d.example", true).unwrap();
        assert_eq!(xtext_decode(r.orcpt.as_deref().unwrap()).unwrap(), b"rfc822;b+c@d.example");
    }

    #[test]
    fn bdat_arguments() {
        assert_eq!(parse_bdat(b"100"), Some((100, false)));
        assert_eq!(parse_bdat(b"0 last"), Some((0, true)));
        assert_eq!(parse_bdat(b""), None);
        assert_eq!(parse_bdat(b"-1"), None);
        assert_eq!(parse_bdat(b"10 LAST x"), None);
        assert_eq!(parse_bdat(b"99999999999999999999"), Some((u64::MAX, false)));
        assert_eq!(parse_bdat(b"999999999999999999999"), None);
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb+3d").unwrap(), b"a+b=");
        assert!(xtext_decode("a+2").is_none());
        assert!(xtext_decode("a b").is_none());
    }
}
