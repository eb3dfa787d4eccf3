use devplane_api::v1alpha1::ProvisioningPolicySpec;

use super::*;

fn spec(yaml: &str) -> ProvisioningPolicySpec {
    serde_yaml::from_str(yaml).expect("a policy spec")
}

fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().expect("a time")
}

const GROUP: &[u8] = b"factory group key";

fn symmetric() -> Rules {
    Rules::compile(&spec(
        r#"
template: {spec: {modelRef: {name: thermo}}}
naming: {prefix: "th-", idPattern: "[0-9a-f]{8}"}
attestation: {symmetricKey: {secretRef: {name: group}}}
limits: {notBefore: "2026-01-01T00:00:00Z", notAfter: "2027-01-01T00:00:00Z"}
"#,
    ))
    .expect("compiles")
}

#[test]
fn the_derived_key_is_hmac_sha256_of_the_id_under_the_group_key() {
    // RFC 4231, test case 2.
    let tag = derive_key(b"Jefe", "what do ya want for nothing?");
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let proof = proof(GROUP, "0000beef");
    assert!(proof_matches(GROUP, "0000beef", &proof));
    assert!(proof_matches(
        GROUP,
        "0000beef",
        proof.trim_end_matches('=')
    ));
    assert!(!proof_matches(GROUP, "0000bee0", &proof));
    assert!(!proof_matches(b"another key", "0000beef", &proof));
    assert!(!proof_matches(GROUP, "0000beef", "not base64 at all!"));
}

#[test]
fn a_device_with_its_derived_key_is_attested_and_named_from_its_id() {
    let rules = symmetric();
    let proof = proof(GROUP, "0000beef");
    let claim = rules
        .attest(
            &Presented {
                device_id: Some("0000beef"),
                proof: Some(&proof),
                ..Presented::default()
            },
            Some(GROUP),
            now(),
        )
        .expect("attested");
    assert_eq!(claim.name, "th-0000beef");
    assert_eq!(claim.device_id, "0000beef");
}

#[test]
fn each_refusal_has_its_reason() {
    let rules = symmetric();
    let other = proof(GROUP, "0000beee");
    let right = proof(GROUP, "0000beef");
    let refused = |presented: Presented<'_>, at: Timestamp| {
        rules
            .attest(&presented, Some(GROUP), at)
            .expect_err("refused")
            .reason
    };
    let with = |id: &'static str, proof: &'static str| Presented {
        device_id: Some(id),
        proof: Some(proof),
        ..Presented::default()
    };
    let other: &'static str = Box::leak(other.into_boxed_str());
    let right: &'static str = Box::leak(right.into_boxed_str());
    assert_eq!(refused(with("0000beef", other), now()), Reason::BadProof);
    assert_eq!(refused(with("0000beef", "AAAA"), now()), Reason::BadProof);
    assert_eq!(
        refused(
            Presented {
                device_id: Some("0000beef"),
                ..Presented::default()
            },
            now()
        ),
        Reason::BadProof
    );
    assert_eq!(refused(with("BEEF", right), now()), Reason::NotAllowed);
    assert_eq!(refused(with("0000beef0", right), now()), Reason::NotAllowed);
    let later: Timestamp = "2027-06-01T00:00:00Z".parse().expect("a time");
    let earlier: Timestamp = "2025-06-01T00:00:00Z".parse().expect("a time");
    assert_eq!(refused(with("0000beef", right), later), Reason::Expired);
    assert_eq!(refused(with("0000beef", right), earlier), Reason::Expired);
    assert_eq!(
        refused(Presented::default(), now()),
        Reason::NotAllowed,
        "no id at all"
    );
}

#[test]
fn pre_registered_serials_come_from_items_and_csv_and_tokens_are_checked() {
    let rules = Rules::compile(&spec(
        r#"
template: {spec: {modelRef: {name: meter}}}
attestation:
  preRegistered:
    items: [{serialNumber: SN-1, deviceId: meter-1}]
    csv: |
      serialNumber,deviceId,token
      SN-2,meter-2,tok-2
      sn-3,,
"#,
    ))
    .expect("compiles");
    let attest = |serial: &str, token: Option<&str>| {
        rules.attest(
            &Presented {
                serial_number: Some(serial),
                token,
                ..Presented::default()
            },
            None,
            now(),
        )
    };
    assert_eq!(attest("SN-1", None).expect("listed").name, "meter-1");
    let with_token = attest("SN-2", Some("tok-2")).expect("listed with its token");
    assert!(with_token.one_time_token);
    assert_eq!(attest("sn-3", None).expect("named by serial").name, "sn-3");
    assert_eq!(attest("SN-2", None).unwrap_err().reason, Reason::BadProof);
    assert_eq!(
        attest("SN-2", Some("tok-3")).unwrap_err().reason,
        Reason::BadProof
    );
    assert_eq!(attest("SN-9", None).unwrap_err().reason, Reason::NotAllowed);
    let claimed_other = rules.attest(
        &Presented {
            serial_number: Some("SN-1"),
            device_id: Some("meter-9"),
            ..Presented::default()
        },
        None,
        now(),
    );
    assert_eq!(claimed_other.unwrap_err().reason, Reason::NotAllowed);
}

#[test]
fn a_bad_allow_list_names_every_bad_line() {
    let problems = parse_allow_csv("serialNumber,token\nSN-1,a\n\nSN-2\n,b\nSN-1,c\n")
        .expect_err("three problems");
    let at: Vec<_> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        at,
        [
            "csv line 4: 1 cells, the header has 2",
            "csv line 5: serialNumber is empty",
            "csv line 6: serial number SN-1 is listed on line 2 already",
        ]
    );
    assert!(parse_allow_csv("serial,token\n").is_err());
}

#[test]
fn certificates_must_name_the_claimed_id() {
    let rules = Rules::compile(&spec(
        r#"
template: {spec: {modelRef: {name: meter}}}
attestation: {x509: {caSecretRef: {name: ca}}}
"#,
    ))
    .expect("compiles");
    let attest = |id: Option<&str>, cn: Option<&str>| {
        rules.attest(
            &Presented {
                device_id: id,
                certificate_id: cn,
                ..Presented::default()
            },
            None,
            now(),
        )
    };
    assert_eq!(attest(None, Some("m-1")).expect("by its CN").name, "m-1");
    assert_eq!(attest(Some("m-1"), Some("m-1")).expect("same").name, "m-1");
    assert_eq!(
        attest(Some("m-2"), Some("m-1")).unwrap_err().reason,
        Reason::BadProof
    );
    assert_eq!(
        attest(Some("m-1"), None).unwrap_err().reason,
        Reason::BadProof
    );
}

#[test]
fn a_repeat_gets_what_the_reprovisioning_rule_says() {
    let claim = Claim {
        device_id: "a".into(),
        name: "a".into(),
        serial_number: Some("SN".into()),
        one_time_token: false,
    };
    let mine = Existing {
        policy: Some("p"),
        serial_number: Some("SN"),
        ..Existing::default()
    };
    let mut rules = symmetric();
    assert_eq!(rules.repeat("p", &claim, &mine), Ok(Repeat::Same));
    let other_serial = Existing {
        serial_number: Some("SN-2"),
        ..mine
    };
    assert_eq!(
        rules.repeat("p", &claim, &other_serial).unwrap_err().reason,
        Reason::AlreadyProvisioned
    );
    let foreign = Existing {
        policy: None,
        ..mine
    };
    assert_eq!(
        rules.repeat("p", &claim, &foreign).unwrap_err().reason,
        Reason::NotAllowed
    );
    rules.reprovisioning = Reprovisioning::Reissue;
    assert_eq!(
        rules.repeat("p", &claim, &other_serial),
        Ok(Repeat::Reissue)
    );
    rules.reprovisioning = Reprovisioning::Refuse;
    assert_eq!(rules.repeat("p", &claim, &mine), Ok(Repeat::Same));
    let connected = Existing {
        connected: true,
        ..mine
    };
    assert_eq!(
        rules.repeat("p", &claim, &connected).unwrap_err().reason,
        Reason::AlreadyProvisioned
    );
    let spent = Claim {
        one_time_token: true,
        ..claim.clone()
    };
    let token_spent = Existing {
        token_spent: true,
        ..mine
    };
    assert_eq!(
        rules.repeat("p", &spent, &token_spent).unwrap_err().reason,
        Reason::AlreadyProvisioned
    );
}

#[test]
fn links_round_trip_through_their_uri() {
    let link = Link::Provision(ProvisionLink {
        endpoint: "https://devices.example.com:8443".into(),
        namespace: "plant-a".into(),
        policy: "thermo".into(),
        device_id: Some("0000beef".into()),
        serial_number: None,
        proof: Some("ab+/cd==".into()),
        token: Some("t&k=n".into()),
    });
    let uri = link.to_uri();
    assert_eq!(
        uri,
        "devplane:provision?v=1&endpoint=https%3A%2F%2Fdevices.example.com%3A8443\
         &namespace=plant-a&policy=thermo&deviceId=0000beef&proof=ab%2B%2Fcd%3D%3D&token=t%26k%3Dn"
    );
    assert_eq!(Link::parse(&uri), Ok(link));
    let connect = Link::Connect(ConnectLink {
        username: "ns/d".into(),
        password: "p w".into(),
        endpoints: vec![("mqtt".into(), "mqtt://h:1883".into())],
    });
    assert_eq!(Link::parse(&connect.to_uri()), Ok(connect));
    assert!(Link::parse("https://example.com").is_err());
    assert!(Link::parse("devplane:provision?v=2&endpoint=x&namespace=n&policy=p").is_err());
    assert!(Link::parse("devplane:provision?v=1&namespace=n&policy=p").is_err());
}

#[test]
fn a_device_names_its_policy_by_label_or_for_a_long_name_by_annotation() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let long = format!("{}-policy", "p".repeat(90));
    for policy in ["probes", long.as_str()] {
        let mut meta = ObjectMeta::default();
        mark_policy(&mut meta, policy);
        let label = &meta.labels.as_ref().expect("labels")
            [devplane_api::constants::labels::PROVISIONING_POLICY];
        assert_eq!(crate::naming::label_value_problem(label), None, "{label}");
        assert_eq!(policy_of(&meta), Some(policy));
        assert_eq!(meta.annotations.is_some(), policy.len() > 63);
    }
    assert_eq!(policy_of(&ObjectMeta::default()), None);
}
