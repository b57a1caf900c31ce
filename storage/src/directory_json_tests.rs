use super::*;
use crate::testutil::TempDir;

const SHA512_CRYPT_HUNTER2: &str = "$6$saltsalt$8iYtNHxjWRl.NF6oNZ5tF.iKFlQREaXBLlSmZKP6dy9l5z3vsooWNW0/GZ6Nej73/TFug6pIPSqbJoCT6dfnj.";

fn a(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn db() -> JsonDirectory {
    let text = format!(
        r#"{{
  "users": [
    {{ "login": "u1", "password": "{SHA512_CRYPT_HUNTER2}", "name": "User One", "quota_mb": 1024,
       "aliases": ["info", "Sales"], "alt_addresses": ["u1@other.example"] }},
    {{ "login": "U2", "password": "{{PLAIN}}pw2" }},
    {{ "login": "fw", "forward": ["ext@elsewhere.example"] }},
    {{ "login": "fwonly", "forward": ["ext@elsewhere.example", "ext2@elsewhere.example"], "keep_copy": false }},
    {{ "login": "gone", "password": "{{PLAIN}}x", "enabled": false, "aliases": ["old"] }},
    {{ "login": "admin1", "password": "{{PLAIN}}root" }}
  ],
  "groups": [
    {{ "name": "staff", "address": "staff", "members": ["u1", "u2", "gone"], "groups": ["teachers"] }},
    {{ "name": "teachers", "address": "Teachers@a.test", "members": ["u1", "fw"] }},
    {{ "name": "masters", "members": ["admin1"] }},
    {{ "name": "nobody", "address": "nobody", "members": ["gone"] }}
  ]
}}"#
    );
    JsonDirectory::from_json(&text, "A.test", "masters").unwrap()
}

fn local(r: Option<Resolution>) -> Vec<String> {
    match r {
        Some(Resolution::Local(v)) => v.into_iter().map(|a| a.address.key()).collect(),
        other => panic!("not local: {other:?}"),
    }
}

#[test]
fn users_aliases_and_alt_addresses() {
    let d = db();
    assert!(d.is_inline());
    assert_eq!(local(d.lookup(&a("u1@a.test")).unwrap()), vec!["u1@a.test"]);
    assert_eq!(local(d.lookup(&a("U1@A.TEST")).unwrap()), vec!["u1@a.test"]);
    assert_eq!(local(d.lookup(&a("info@a.test")).unwrap()), vec!["u1@a.test"]);
    assert_eq!(local(d.lookup(&a("sales@a.test")).unwrap()), vec!["u1@a.test"]);
    assert_eq!(local(d.lookup(&a("u1@other.example")).unwrap()), vec!["u1@a.test"]);
    assert_eq!(local(d.lookup(&a("u2@a.test")).unwrap()), vec!["u2@a.test"]);
    assert_eq!(d.lookup(&a("nobody-here@a.test")).unwrap(), None);
    assert_eq!(d.lookup(&a("u1@b.test")).unwrap(), None);
    let acct = d.account(&a("u1@a.test")).unwrap().unwrap();
    assert_eq!(acct.quota_bytes, Some(1024 << 20));
    assert_eq!(acct.address.to_string(), "u1@a.test");
    assert_eq!(d.account(&a("u2@a.test")).unwrap().unwrap().address.local_part(), "U2");
}

#[test]
fn forwards() {
    let d = db();
    match d.lookup(&a("fw@a.test")).unwrap() {
        Some(Resolution::Mixed { local, forward }) => {
            assert_eq!(local.len(), 1);
            assert_eq!(forward, vec![a("ext@elsewhere.example")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.lookup(&a("fwonly@a.test")).unwrap(), Some(Resolution::Forward(vec![a("ext@elsewhere.example"), a("ext2@elsewhere.example")])));
}

#[test]
fn groups_expand_nested_deduplicated_and_skip_disabled() {
    let d = db();
    match d.lookup(&a("staff@a.test")).unwrap() {
        Some(Resolution::Mixed { local, forward }) => {
            let keys: Vec<String> = local.iter().map(|a| a.address.key()).collect();
            assert_eq!(keys, vec!["u1@a.test", "u2@a.test", "fw@a.test"]);
            assert_eq!(forward, vec![a("ext@elsewhere.example")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(d.lookup(&a("teachers@a.test")).unwrap(), Some(Resolution::Mixed { .. })));
    assert!(matches!(d.lookup(&a("nobody@a.test")), Err(DirectoryError::Data(_))), "empty group accepted");
    assert_eq!(d.lookup(&a("masters@a.test")).unwrap(), None, "group without address resolved");
}

#[test]
fn disabled_users_are_unknown() {
    let d = db();
    assert_eq!(d.lookup(&a("gone@a.test")).unwrap(), None);
    assert_eq!(d.lookup(&a("old@a.test")).unwrap(), None);
    assert_eq!(d.account(&a("gone@a.test")).unwrap(), None);
    assert_eq!(d.verify(&a("gone@a.test"), "x").unwrap(), Verified::UnknownLogin);
}

#[test]
fn verify_and_master_users() {
    let d = db();
    match d.verify(&a("u1@a.test"), "hunter2").unwrap() {
        Verified::Yes(acct) => assert!(!acct.is_master),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.verify(&a("u1@a.test"), "hunter3").unwrap(), Verified::WrongPassword);
    assert_eq!(d.verify(&a("info@a.test"), "hunter2").unwrap(), Verified::UnknownLogin, "alias accepted as login");
    assert_eq!(d.verify(&a("fw@a.test"), "").unwrap(), Verified::WrongPassword, "empty stored password matched");
    match d.verify(&a("admin1@a.test"), "root").unwrap() {
        Verified::Yes(acct) => assert!(acct.is_master),
        other => panic!("{other:?}"),
    }
    assert!(d.list_users().iter().any(|u| u.login == "admin1" && u.is_master));
}

fn chain(n: usize, extra: &str) -> String {
    let mut groups: Vec<String> = (0..n).map(|i| format!(r#"{{ "name": "g{i}", "address": "g{i}", "members": ["u{i}"], "groups": ["g{}"] }}"#, i + 1)).collect();
    groups.push(format!(r#"{{ "name": "g{n}", "members": ["u{n}"] {extra} }}"#));
    let users: Vec<String> = (0..=n).map(|i| format!(r#"{{ "login": "u{i}" }}"#)).collect();
    format!(r#"{{ "users": [{}], "groups": [{}] }}"#, users.join(","), groups.join(","))
}

#[test]
fn group_depth_limit() {
    // g0 (depth 1) → … → g7 (depth 8): allowed; one more level is not.
    let ok = JsonDirectory::from_json(&chain(GROUP_DEPTH_MAX - 1, ""), "a.test", "masters").unwrap();
    assert_eq!(local(ok.lookup(&a("g0@a.test")).unwrap()).len(), GROUP_DEPTH_MAX);
    let deep = JsonDirectory::from_json(&chain(GROUP_DEPTH_MAX, ""), "a.test", "masters").unwrap();
    assert!(matches!(deep.lookup(&a("g0@a.test")), Err(DirectoryError::Data(_))));
    assert_eq!(local(deep.lookup(&a("g1@a.test")).unwrap()).len(), GROUP_DEPTH_MAX);
}

#[test]
fn group_loops_are_data_errors() {
    let looped = JsonDirectory::from_json(&chain(3, r#", "groups": ["g1"]"#), "a.test", "g2").unwrap();
    match looped.lookup(&a("g0@a.test")) {
        Err(DirectoryError::Data(m)) => assert!(m.contains("g1 -> g2 -> g3 -> g1"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A loop in the master group only costs the loop, not the database.
    assert!(looped.account(&a("u3@a.test")).unwrap().unwrap().is_master);
    let selfish = JsonDirectory::from_json(r#"{"users":[{"login":"u"}],"groups":[{"name":"s","address":"s","members":["u"],"groups":["s"]}]}"#, "a.test", "m").unwrap();
    assert!(matches!(selfish.lookup(&a("s@a.test")), Err(DirectoryError::Data(_))));
}

#[test]
fn diamond_is_not_a_loop() {
    let text = r#"{"users":[{"login":"u"}],"groups":[
        {"name":"top","address":"top","members":[],"groups":["l","r"]},
        {"name":"l","members":[],"groups":["d"]},{"name":"r","members":[],"groups":["d"]},
        {"name":"d","members":["u"]}]}"#;
    let d = JsonDirectory::from_json(text, "a.test", "m").unwrap();
    assert_eq!(local(d.lookup(&a("top@a.test")).unwrap()), vec!["u@a.test"]);
}

#[test]
fn expansion_limit() {
    let n = EXPANSION_TARGETS_MAX + 1;
    let users: Vec<String> = (0..n).map(|i| format!(r#"{{"login":"u{i}"}}"#)).collect();
    let members: Vec<String> = (0..n).map(|i| format!(r#""u{i}""#)).collect();
    let text = format!(
        r#"{{"users":[{}],"groups":[{{"name":"all","address":"all","members":[{}]}},{{"name":"fits","address":"fits","members":[{}]}}]}}"#,
        users.join(","),
        members.join(","),
        members[1..].join(",")
    );
    let d = JsonDirectory::from_json(&text, "a.test", "m").unwrap();
    assert!(matches!(d.lookup(&a("all@a.test")), Err(DirectoryError::Data(_))));
    assert_eq!(local(d.lookup(&a("fits@a.test")).unwrap()).len(), EXPANSION_TARGETS_MAX);
}

#[test]
fn invalid_files_are_refused_with_names() {
    let dup = r#"{"users":[{"login":"u1","aliases":["info"]},{"login":"U1"},{"login":"u2","alt_addresses":["INFO@a.test"]}],
                  "groups":[{"name":"g","address":"u2","members":["u1"]},{"name":"G","members":[]}]}"#;
    let err = JsonDirectory::from_json(dup, "a.test", "m").unwrap_err().to_string();
    for needle in ["duplicate address u1@a.test", "duplicate address info@a.test", "duplicate address u2@a.test", "duplicate group name \"G\""] {
        assert!(err.contains(needle), "{needle} missing in: {err}");
    }
    let cases = [
        r#"{"users":[{"login":"a b"}]}"#,
        r#"{"users":[{"login":"u","aliases":["x@y.z"]}]}"#,
        r#"{"users":[{"login":"u","forward":["not an address"]}]}"#,
        r#"{"users":[{"login":"u","quota_mb":0}]}"#,
        r#"{"groups":[{"name":"g","members":["ghost"]}]}"#,
        r#"{"groups":[{"name":"g","members":[],"groups":["ghost"]}]}"#,
        r#"{"users":[{"login":"u","alias":["typo"]}]}"#,
        r#"{"users":[{"login":"u"}"#,
        r#"[]"#,
    ];
    for c in cases {
        assert!(JsonDirectory::from_json(c, "a.test", "m").is_err(), "{c} accepted");
    }
    assert!(JsonDirectory::from_json("{}", "not a domain", "m").is_err());
}

#[test]
fn load_missing_too_large_and_round_trip() {
    let t = TempDir::new();
    let path = t.path().join("users.json");
    let mut d = JsonDirectory::load(&path, "a.test", "masters").unwrap();
    assert!(d.list_users().is_empty());
    d.add_user("alice", &password::hash("s3cret").unwrap(), Some(10)).unwrap();
    d.add_user("bob", "{PLAIN}b", None).unwrap();
    assert!(d.add_user("Alice", "x", None).is_err(), "duplicate login accepted");
    assert!(d.add_user("bad login", "x", None).is_err());
    d.save(&path).unwrap();
    let mut back = JsonDirectory::load(&path, "a.test", "masters").unwrap().with_name("local users");
    assert_eq!(back.name(), "local users");
    assert_eq!(back.list_users(), d.list_users());
    assert!(matches!(back.verify(&a("alice@a.test"), "s3cret").unwrap(), Verified::Yes(_)));
    back.set_password("alice", "{PLAIN}new").unwrap();
    back.set_enabled("bob", false).unwrap();
    back.remove_user("bob").unwrap();
    assert!(matches!(back.remove_user("bob"), Err(JsonDbError::UnknownUser(_))));
    back.save(&path).unwrap();
    let again = JsonDirectory::load(&path, "a.test", "masters").unwrap();
    assert!(matches!(again.verify(&a("alice@a.test"), "new").unwrap(), Verified::Yes(_)));
    assert_eq!(again.list_users().len(), 1);
    let leftovers = fs::read_dir(t.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temporary file left behind");

    let big = t.path().join("big.json");
    let f = File::create(&big).unwrap();
    f.set_len(JSON_FILE_BYTES_MAX + 1).unwrap();
    assert!(matches!(JsonDirectory::load(&big, "a.test", "m"), Err(JsonDbError::TooLarge { .. })));
    fs::write(&big, b"{\"users\": [").unwrap();
    match JsonDirectory::load(&big, "a.test", "m") {
        Err(JsonDbError::Syntax { line, .. }) => assert_eq!(line, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn remove_user_drops_group_membership() {
    let mut d = db();
    d.remove_user("u2").unwrap();
    assert_eq!(d.lookup(&a("u2@a.test")).unwrap(), None);
    match d.lookup(&a("staff@a.test")).unwrap() {
        Some(Resolution::Mixed { local, .. }) => assert!(local.iter().all(|a| a.address.key() != "u2@a.test")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn is_send_and_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<JsonDirectory>();
}
