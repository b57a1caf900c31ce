use super::*;
use crate::dns::LocalFuture;
use std::collections::HashMap;
use std::time::Duration;

/// A fixed zone for the resolver trait.
#[derive(Default)]
struct Zone(HashMap<(String, QueryKind), Result<Answer, DnsError>>);

impl Zone {
    fn txt(mut self, name: &str, value: &str) -> Self {
        let entry = self.0.entry((name.to_owned(), QueryKind::Txt)).or_insert(Ok(Answer { records: Records::Txt(Vec::new()), ttl: Duration::from_secs(60) }));
        if let Ok(Answer { records: Records::Txt(v), .. }) = entry {
            v.push(value.as_bytes().to_vec());
        }
        self
    }
    fn a(mut self, name: &str, ips: &[&str]) -> Self {
        self.0.insert((name.to_owned(), QueryKind::A), Ok(Answer { records: Records::Ips(ips.iter().map(|s| s.parse().unwrap()).collect()), ttl: Duration::from_secs(60) }));
        self
    }
    fn mx(mut self, name: &str, hosts: &[&str]) -> Self {
        self.0.insert((name.to_owned(), QueryKind::Mx), Ok(Answer { records: Records::Mx(hosts.iter().map(|h| (10, h.to_string())).collect()), ttl: Duration::from_secs(60) }));
        self
    }
    fn ptr(mut self, name: &str, names: &[&str]) -> Self {
        self.0.insert((name.to_owned(), QueryKind::Ptr), Ok(Answer { records: Records::Names(names.iter().map(|n| n.to_string()).collect()), ttl: Duration::from_secs(60) }));
        self
    }
    fn temp(mut self, name: &str, kind: QueryKind) -> Self {
        self.0.insert((name.to_owned(), kind), Err(DnsError::Temporary("SERVFAIL".into())));
        self
    }
}

impl Resolver for Zone {
    fn lookup<'a>(&'a self, name: &'a str, kind: QueryKind) -> LocalFuture<'a, Result<Answer, DnsError>> {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), kind);
        let v = self.0.get(&key).cloned().unwrap_or(Err(DnsError::NoDomain));
        Box::pin(async move { v })
    }
}

fn spf_of(zone: &Zone, ip: &str, domain: &str) -> mail_auth::SpfResult {
    let sender = format!("user@{domain}");
    let q = spf::Query { ip: ip.parse().unwrap(), sender: &sender, domain, helo: "client.example", hostname: "mx.test" };
    futures_lite::future::block_on(spf::check_host(zone, &q)).result()
}

#[test]
fn spf_results() {
    use mail_auth::SpfResult::*;
    let z = Zone::default()
        .txt("pass.example", "v=spf1 ip4:192.0.2.0/24 -all")
        .txt("soft.example", "v=spf1 ~all")
        .txt("neutral.example", "v=spf1 ?all")
        .txt("mx.example", "v=spf1 mx a:host.mx.example -all")
        .mx("mx.example", &["mail.mx.example"])
        .a("mail.mx.example", &["198.51.100.7"])
        .txt("inc.example", "v=spf1 include:pass.example -all")
        .txt("redir.example", "v=spf1 redirect=pass.example")
        .txt("two.example", "v=spf1 -all")
        .txt("two.example", "v=spf1 +all")
        .txt("bad.example", "v=spf1 ip4:192.0.2.0/24 foo:bar -all")
        .txt("bad4.example", "v=spf1 ip4:300.1.1.1 -all")
        .txt("bad6.example", "v=spf1 ip6:2001:db8::/129 -all")
        .txt("dup.example", "v=spf1 redirect=a.example redirect=b.example")
        .txt("other.example", "some verification token")
        .txt("temp.example", "v=spf1 include:down.example -all")
        .temp("down.example", QueryKind::Txt)
        .txt("macro.example", "v=spf1 exists:%{i}._spf.%{d} -all")
        .a("192.0.2.9._spf.macro.example", &["127.0.0.2"]);
    assert_eq!(spf_of(&z, "192.0.2.9", "pass.example"), Pass);
    assert_eq!(spf_of(&z, "203.0.113.1", "pass.example"), Fail);
    assert_eq!(spf_of(&z, "203.0.113.1", "soft.example"), SoftFail);
    assert_eq!(spf_of(&z, "203.0.113.1", "neutral.example"), Neutral);
    assert_eq!(spf_of(&z, "198.51.100.7", "mx.example"), Pass);
    assert_eq!(spf_of(&z, "192.0.2.9", "inc.example"), Pass);
    assert_eq!(spf_of(&z, "203.0.113.1", "inc.example"), Fail);
    assert_eq!(spf_of(&z, "192.0.2.9", "redir.example"), Pass);
    assert_eq!(spf_of(&z, "192.0.2.9", "two.example"), PermError, "two records: §4.5");
    assert_eq!(spf_of(&z, "192.0.2.9", "bad.example"), PermError, "unknown mechanism");
    assert_eq!(spf_of(&z, "192.0.2.9", "bad4.example"), PermError);
    assert_eq!(spf_of(&z, "192.0.2.9", "bad6.example"), PermError);
    assert_eq!(spf_of(&z, "192.0.2.9", "dup.example"), PermError);
    assert_eq!(spf_of(&z, "192.0.2.9", "other.example"), None);
    assert_eq!(spf_of(&z, "192.0.2.9", "nx.example"), None);
    assert_eq!(spf_of(&z, "192.0.2.9", "temp.example"), TempError);
    assert_eq!(spf_of(&z, "192.0.2.9", "macro.example"), Pass);
    assert_eq!(spf_of(&z, "192.0.2.10", "macro.example"), Fail);
    assert_eq!(spf_of(&z, "192.0.2.9", "not a domain"), None);
}

#[test]
fn spf_limits() {
    use mail_auth::SpfResult::*;
    // Eleven includes in a chain: the 11th DNS term is a permerror (§4.6.4).
    let mut z = Zone::default();
    for i in 0..12 {
        z = z.txt(&format!("l{i}.example"), &format!("v=spf1 include:l{}.example -all", i + 1));
    }
    assert_eq!(spf_of(&z, "192.0.2.1", "l0.example"), PermError);
    // A self-include loops until the limit, not forever.
    let z = Zone::default().txt("loop.example", "v=spf1 include:loop.example -all");
    assert_eq!(spf_of(&z, "192.0.2.1", "loop.example"), PermError);
    // Three void lookups: permerror (limit 2).
    let z = Zone::default().txt("void.example", "v=spf1 a:n1.example a:n2.example a:n3.example -all");
    assert_eq!(spf_of(&z, "192.0.2.1", "void.example"), PermError);
    let z = Zone::default().txt("void2.example", "v=spf1 a:n1.example a:n2.example -all");
    assert_eq!(spf_of(&z, "192.0.2.1", "void2.example"), Fail);
}

#[test]
fn reverse_names() {
    assert_eq!(spf::reversed_labels("192.0.2.5".parse().unwrap()), "5.2.0.192");
    assert_eq!(spf::reverse_name("192.0.2.5".parse().unwrap()), "5.2.0.192.in-addr.arpa");
    let v6 = spf::reversed_labels("2001:db8::1".parse().unwrap());
    assert!(v6.starts_with("1.0.0.0.0.0.0.0") && v6.ends_with("8.b.d.0.1.0.0.2"), "{v6}");
    assert_eq!(v6.split('.').count(), 32);
}

#[test]
fn fcrdns_needs_the_forward_match() {
    let z = Zone::default()
        .ptr("5.2.0.192.in-addr.arpa", &["liar.example", "mail.good.example"])
        .a("liar.example", &["203.0.113.9"])
        .a("mail.good.example", &["192.0.2.5"])
        .ptr("6.2.0.192.in-addr.arpa", &["liar.example"]);
    let run = |ip: &str| futures_lite::future::block_on(fcrdns(&z, ip.parse().unwrap()));
    assert_eq!(run("192.0.2.5").as_deref(), Some("mail.good.example"));
    assert_eq!(run("192.0.2.6"), None);
    assert_eq!(run("192.0.2.7"), None);
}

#[test]
fn helo_sanity() {
    let local: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(helo_acceptable("mail.client.example", "mx.test", local));
    assert!(helo_acceptable("[192.0.2.9]", "mx.test", local));
    assert!(!helo_acceptable("[192.0.2.1]", "mx.test", local), "our own address");
    assert!(!helo_acceptable("MX.test", "mx.test", local), "our own name");
    assert!(!helo_acceptable("localhost", "mx.test", local));
    assert!(!helo_acceptable("bad_name.example", "mx.test", local));
    assert!(!helo_acceptable("192.0.2.9", "mx.test", local), "an address must be a literal");
}

#[test]
fn forged_results_found_by_authserv_id() {
    let m = b"Authentication-Results: mx.test; spf=pass\nauthentication-results:\n  (comment) MX.TEST;\n dkim=pass\nAuthentication-Results: other.example; dkim=pass\nSubject: x\n\nAuthentication-Results: mx.test; body\n";
    let found = forged_results(m, "mx.test");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0], 0);
    assert!(m[found[1]..].starts_with(b"authentication-results:\n"));
    assert_eq!(UNTRUSTED_NAME.len(), b"Authentication-Results".len());
}

#[test]
fn dmarc_walk_names() {
    assert_eq!(message::dmarc_walk("a.b.example"), vec!["_dmarc.a.b.example.", "_dmarc.b.example.", "_dmarc.example."]);
    assert!(message::dmarc_walk("localhost").is_empty());
    let deep = message::dmarc_walk("1.2.3.4.5.6.7.8.9.example");
    assert_eq!(deep.len(), 8);
    assert_eq!(deep[1], "_dmarc.4.5.6.7.8.9.example.");
}

#[test]
fn crlf_conversion() {
    assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
}

/// DKIM and DMARC through mail-auth with records handed in: a signature by
/// a key Varan generated verifies, an altered body does not, and DMARC's
/// policies come out as dispositions. Nothing here touches the network.
#[test]
fn dkim_and_dmarc_with_prefetched_records() {
    use message::{Disposition, Fetched, Inputs, Prefetched};
    let dir = std::env::temp_dir().join(format!("varan-checks-test-{}", std::process::id()));
    let key = varan_storage::dkim::generate(&dir, "signed.example", "s1", varan_storage::dkim::Algorithm::Rsa2048, true).unwrap();
    let (signers, errors) = varan_storage::dkim::DkimSigners::load(&dir, "s1", ["signed.example"]);
    assert!(errors.is_empty(), "{errors:?}");
    let body = "From: <a@signed.example>\r\nTo: <u@bench.test>\r\nSubject: hi\r\nMessage-ID: <1@signed.example>\r\n\r\nHello\r\n";
    let header = signers.sign("signed.example", body.as_bytes()).unwrap().unwrap();
    let signed = format!("{header}{body}").into_bytes();

    let needed = message::needed(&signed, 5, "bounce.example", true);
    assert_eq!(needed.keys, vec!["s1._domainkey.signed.example.".to_owned()]);
    assert!(needed.dmarc.contains(&"_dmarc.signed.example.".to_owned()) && needed.dmarc.contains(&"_dmarc.bounce.example.".to_owned()), "{needed:?}");

    let answers = |dmarc: &str| {
        let mut v: Vec<(String, Fetched)> = needed.dmarc.iter().map(|n| (n.clone(), Fetched::NotFound)).collect();
        v.push(("s1._domainkey.signed.example.".into(), Fetched::Records(vec![key.dns_value.clone().into_bytes()])));
        v.push(("_dmarc.signed.example.".into(), Fetched::Records(vec![dmarc.as_bytes().to_vec()])));
        Prefetched::new(v)
    };
    let spf = mail_auth::SpfOutput::new("bounce.example".into()).with_result(mail_auth::SpfResult::Pass);
    let inputs = Inputs {
        authserv_id: "mx.test",
        remote: "192.0.2.5".parse().unwrap(),
        helo: "client.example",
        mail_from: "x@bounce.example",
        spf_domain: "bounce.example",
        spf: Some(&spf),
        dkim: true,
        dkim_max: 5,
        dmarc: true,
        arc: true,
    };
    let v = message::verify(&signed, &answers("v=DMARC1; p=reject"), &inputs);
    assert!(v.results.contains("dkim=pass") && v.results.contains("dmarc=pass"), "{}", v.results);
    assert!(v.results.contains("spf=pass"), "{}", v.results);
    assert_eq!(v.disposition, Disposition::Deliver);

    let altered = String::from_utf8(signed.clone()).unwrap().replace("Hello", "Hello, altered").into_bytes();
    let v = message::verify(&altered, &answers("v=DMARC1; p=reject"), &inputs);
    assert!(!v.results.contains("dkim=pass") && v.results.contains("dmarc=fail"), "{}", v.results);
    assert_eq!(v.disposition, Disposition::Reject);
    assert_eq!(v.dmarc_domain, "signed.example");
    let v = message::verify(&altered, &answers("v=DMARC1; p=quarantine"), &inputs);
    assert_eq!(v.disposition, Disposition::Quarantine);
    let v = message::verify(&altered, &answers("v=DMARC1; p=none"), &inputs);
    assert_eq!(v.disposition, Disposition::Deliver);

    // The key was not fetched: a temporary error, never a lookup of its own
    // and never a refusal.
    let v = message::verify(&signed, &Prefetched::new(vec![("_dmarc.signed.example.".into(), Fetched::Records(vec![b"v=DMARC1; p=reject".to_vec()]))]), &inputs);
    assert!(v.results.contains("dkim=temperror"), "{}", v.results);
    assert_eq!(v.disposition, Disposition::Deliver);

    // Garbage in, no panic.
    for junk in [&b""[..], b"\r\n\r\n", b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=\r\n\r\nx", b"From: a@\r\n\r\n"] {
        let _ = message::verify(junk, &Prefetched::new(Vec::new()), &inputs);
        let _ = message::needed(junk, 5, "", true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
