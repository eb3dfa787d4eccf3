//! The pure parts of `devplane qr`: which links each mode draws, file naming, drawing, the
//! sheet.

use devplane_api::v1alpha1::ProvisioningPolicySpec;
use devplane_core::provisioning::{ConnectLink, Link, ProvisionLink, proof};

use super::*;

const GROUP: &[u8] = b"factory group key";

fn spec(yaml: &str) -> ProvisioningPolicySpec {
    serde_yaml::from_str(yaml).expect("a policy spec")
}

const AT: PolicyAt<'static> = PolicyAt {
    endpoint: "https://devices.example.com:8443",
    namespace: "smart-home",
    name: "thermo",
};

fn symmetric() -> ProvisioningPolicySpec {
    spec(
        r#"
template: {spec: {modelRef: {name: thermo-hygrometer}}}
naming: {prefix: "th-", idPattern: "[0-9a-f]{8}"}
attestation: {symmetricKey: {secretRef: {name: group}}}
"#,
    )
}

fn listed(with_key: bool) -> ProvisioningPolicySpec {
    let key = if with_key {
        "symmetricKey: {secretRef: {name: group}}, "
    } else {
        ""
    };
    spec(&format!(
        r#"
template: {{spec: {{modelRef: {{name: thermo-hygrometer}}}}}}
attestation:
  {{{key}preRegistered: {{items: [
    {{serialNumber: SN-2, deviceId: "0000cafe", token: t-2}},
    {{serialNumber: sn-1, token: "a&b"}},
  ]}}}}
"#
    ))
}

fn provision(code: &Code) -> &ProvisionLink {
    match &code.link {
        Link::Provision(link) => link,
        other => panic!("a provision link expected, got {other:?}"),
    }
}

#[test]
fn a_symmetric_key_policy_gives_one_link_with_the_derived_proof() {
    let codes =
        provision_codes(AT, &symmetric(), Some(GROUP), Select::Id("0000beef")).expect("one code");
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0].id, "0000beef");
    assert_eq!(codes[0].caption, ["0000beef"]);
    assert_eq!(
        provision(&codes[0]),
        &ProvisionLink {
            endpoint: AT.endpoint.into(),
            namespace: "smart-home".into(),
            policy: "thermo".into(),
            device_id: Some("0000beef".into()),
            serial_number: None,
            proof: Some(proof(GROUP, "0000beef")),
            token: None,
        }
    );
    let uri = codes[0].link.to_uri();
    assert!(
        uri.starts_with("devplane:provision?v=1&endpoint=https%3A%2F%2Fdevices.example.com%3A8443&namespace=smart-home&policy=thermo&deviceId=0000beef&proof="),
        "{uri}"
    );
    assert_eq!(Link::parse(&uri).expect("parses"), codes[0].link);
}

#[test]
fn a_symmetric_key_policy_needs_its_group_key() {
    let error =
        provision_codes(AT, &symmetric(), None, Select::Id("0000beef")).expect_err("no key");
    assert!(matches!(error, LinkError::NoGroupKey { .. }), "{error}");
}

#[test]
fn an_id_the_policy_would_refuse_is_refused_before_drawing() {
    let error =
        provision_codes(AT, &symmetric(), Some(GROUP), Select::Id("BEEF")).expect_err("pattern");
    assert_eq!(
        error.to_string(),
        "ProvisioningPolicy thermo would refuse device id BEEF: it does not match idPattern ^(?:[0-9a-f]{8})$"
    );
}

#[test]
fn a_pre_registered_entry_is_found_by_device_id_or_by_serial_number() {
    for id in ["0000cafe", "SN-2"] {
        let codes =
            provision_codes(AT, &listed(false), None, Select::Id(id)).expect("listed entry");
        let link = provision(&codes[0]);
        assert_eq!(link.device_id.as_deref(), Some("0000cafe"));
        assert_eq!(link.serial_number.as_deref(), Some("SN-2"));
        assert_eq!(link.token.as_deref(), Some("t-2"));
        assert_eq!(link.proof, None, "no group key, no proof");
        assert_eq!(codes[0].caption, ["0000cafe", "serial SN-2"]);
    }
    let error =
        provision_codes(AT, &listed(false), None, Select::Id("SN-9")).expect_err("not listed");
    assert!(matches!(error, LinkError::NotListed { .. }), "{error}");
}

#[test]
fn all_lists_every_entry_with_a_proof_when_the_policy_also_has_a_group_key() {
    let codes = provision_codes(AT, &listed(true), Some(GROUP), Select::All).expect("codes");
    let ids: Vec<&str> = codes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["0000cafe", "sn-1"], "sorted by serial number");
    let second = provision(&codes[1]);
    assert_eq!(
        second.device_id.as_deref(),
        Some("sn-1"),
        "the serial is the id"
    );
    assert_eq!(second.token.as_deref(), Some("a&b"));
    assert_eq!(second.proof.as_deref(), Some(proof(GROUP, "sn-1").as_str()));
    assert_eq!(codes[1].caption, ["sn-1"], "no repeated serial");
    assert!(codes[1].link.to_uri().contains("&token=a%26b"));
}

#[test]
fn all_needs_a_list_and_certificates_alone_give_no_code() {
    let error = provision_codes(AT, &symmetric(), Some(GROUP), Select::All).expect_err("no list");
    assert!(matches!(error, LinkError::NothingToList { .. }), "{error}");
    let x509 = spec(
        r#"
template: {spec: {modelRef: {name: m}}}
attestation: {x509: {caSecretRef: {name: ca}}}
"#,
    );
    let error = provision_codes(AT, &x509, None, Select::Id("a")).expect_err("x509");
    assert!(
        matches!(error, LinkError::CertificatesOnly { .. }),
        "{error}"
    );
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn a_connect_code_carries_the_secrets_credentials_with_endpoints_in_protocol_order() {
    let secret = data(&[
        ("username", "smart-home/th-1"),
        ("password", "s3cret/+="),
        ("coaps-endpoint", "coaps://127.0.0.1:5684"),
        ("http-endpoint", "http://127.0.0.1:8080"),
        ("mqtt-endpoint", "mqtt://127.0.0.1:1883"),
        ("previous-password", "old"),
        ("previous-password-expires-at", "2026-01-01T00:00:00Z"),
    ]);
    let code = connect_code("th-1", Some("TH-0001"), &secret).expect("a code");
    assert_eq!(code.caption, ["th-1", "serial TH-0001"]);
    assert_eq!(
        code.link,
        Link::Connect(ConnectLink {
            username: "smart-home/th-1".into(),
            password: "s3cret/+=".into(),
            endpoints: vec![
                ("mqtt".into(), "mqtt://127.0.0.1:1883".into()),
                ("http".into(), "http://127.0.0.1:8080".into()),
                ("coaps".into(), "coaps://127.0.0.1:5684".into()),
            ],
        })
    );
    assert!(
        code.link
            .to_uri()
            .starts_with("devplane:connect?v=1&username=smart-home%2Fth-1&password=s3cret%2F%2B%3D&mqtt=mqtt%3A%2F%2F"),
        "{}",
        code.link.to_uri()
    );
    assert_eq!(
        connect_code("th-1", None, &data(&[("username", "smart-home/th-1")])),
        None,
        "no password yet"
    );
}

#[test]
fn out_paths_ending_in_png_or_svg_are_files_and_anything_else_a_directory() {
    assert_eq!(
        Target::of(Path::new("a/x.png")),
        Target::Png("a/x.png".into())
    );
    assert_eq!(Target::of(Path::new("X.SVG")), Target::Svg("X.SVG".into()));
    assert_eq!(
        Target::of(Path::new("codes")),
        Target::Directory("codes".into())
    );
    assert_eq!(
        Target::of(Path::new("codes.d/")),
        Target::Directory("codes.d/".into())
    );
}

fn code(id: &str) -> Code {
    Code {
        id: id.into(),
        caption: vec![id.into()],
        link: Link::Connect(ConnectLink {
            username: format!("ns/{id}"),
            password: "p".into(),
            endpoints: Vec::new(),
        }),
    }
}

#[test]
fn file_stems_are_cleaned_of_path_characters_and_unique() {
    let codes = [
        code("th-1"),
        code("../etc/passwd"),
        code("a b"),
        code("a/b"),
        code("A_B"),
        code(".hidden"),
        code(""),
    ];
    assert_eq!(
        file_stems(&codes),
        [
            "th-1",
            "_.._etc_passwd",
            "a_b",
            "a_b-2",
            "A_B-3",
            "_.hidden",
            "_"
        ]
    );
}

#[test]
fn the_endpoint_is_an_http_or_https_base_url() {
    assert_eq!(
        endpoint_of("https://devices.example.com:8443/").expect("ok"),
        "https://devices.example.com:8443"
    );
    assert_eq!(
        endpoint_of("http://127.0.0.1:8080").expect("ok"),
        "http://127.0.0.1:8080"
    );
    for bad in [
        "devices.example.com",
        "mqtt://x:1883",
        "https://",
        "https:///x",
    ] {
        assert!(endpoint_of(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_code_has_a_four_module_quiet_zone_and_a_png_of_eight_pixels_per_module() {
    let matrix = Matrix::encode("devplane:connect?v=1&username=a%2Fb&password=c").expect("fits");
    assert_eq!(matrix.size(), matrix.width() + 8);
    for i in 0..matrix.size() {
        for edge in [0, 3, matrix.size() - 4, matrix.size() - 1] {
            assert!(!matrix.is_dark(i, edge) && !matrix.is_dark(edge, i));
        }
    }
    // The top-left finder pattern starts right inside the quiet zone.
    assert!(matrix.is_dark(4, 4) && matrix.is_dark(10, 10) && !matrix.is_dark(5, 5));

    let png = matrix.png(PNG_SCALE).expect("png");
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("a frame");
    let side = matrix.size() * PNG_SCALE;
    assert_eq!((info.width as usize, info.height as usize), (side, side));
    assert_eq!(pixels[0], 255, "quiet zone is white");
    assert_eq!(
        pixels[4 * PNG_SCALE * side + 4 * PNG_SCALE],
        0,
        "finder is black"
    );

    let svg = matrix.svg(Some(100));
    let size = matrix.size();
    assert!(svg.starts_with(&format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="100" height="100""#
    )));
    assert!(
        svg.contains("M4 4h7v1h-7z"),
        "the finder's top edge is one run"
    );
    assert!(!matrix.svg(None).contains("width=\"100\""));
}

#[test]
fn a_link_too_long_for_a_qr_code_is_an_error() {
    let error = Matrix::encode(&"x".repeat(5000)).expect_err("too long");
    assert!(error.to_string().contains("5000 characters"), "{error}");
}

#[test]
fn the_sheet_escapes_captions_and_title_and_inlines_every_svg() {
    let entries = [
        SheetEntry {
            svg: "<svg id=\"one\"></svg>".into(),
            caption: vec!["<b>&x".into(), "serial \"7\"".into()],
        },
        SheetEntry {
            svg: "<svg id=\"two\"></svg>".into(),
            caption: vec!["plain".into()],
        },
    ];
    let html = sheet("Policy <ns>/'p'", &entries);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>Policy &lt;ns&gt;/&#39;p&#39;</title>"));
    assert!(
        html.contains(r#"<div class="id">&lt;b&gt;&amp;x</div><div>serial &quot;7&quot;</div>"#)
    );
    assert!(html.contains("<svg id=\"one\"></svg>") && html.contains("<svg id=\"two\"></svg>"));
    assert_eq!(html.matches("<figure>").count(), 2);
    assert!(html.contains("@page") && html.contains("break-inside: avoid"));
    assert!(!html.contains("<b>"));
}

#[test]
fn one_file_takes_one_code_and_a_directory_gets_a_png_and_an_svg_per_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = dir.path().join("one.png");
    let error = write(&[code("a"), code("b")], Some(&Target::of(&one)), None, "t")
        .expect_err("two codes, one file");
    assert!(
        matches!(error, QrError::OneFileManyCodes { count: 2, .. }),
        "{error}"
    );
    assert!(!one.exists());

    write(&[code("a")], Some(&Target::of(&one)), None, "t").expect("one file");
    assert!(
        std::fs::read(&one)
            .expect("written")
            .starts_with(b"\x89PNG")
    );

    let codes = dir.path().join("codes");
    let sheet_path = dir.path().join("sheet.html");
    write(
        &[code("a"), code("b")],
        Some(&Target::of(&codes)),
        Some(&sheet_path),
        "t",
    )
    .expect("a directory");
    let mut names: Vec<String> = std::fs::read_dir(&codes)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.png", "a.svg", "b.png", "b.svg"]);
    let html = std::fs::read_to_string(&sheet_path).expect("sheet");
    assert_eq!(html.matches("<svg").count(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sheet_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "codes carry secrets");
    }
    let error = write(&[], Some(&Target::of(&codes)), None, "Policy p").expect_err("empty");
    assert_eq!(
        error.to_string(),
        "Policy p gives no code: it lists no device"
    );
}

#[test]
fn the_example_links_in_the_docs_are_what_devplane_qr_draws() {
    let docs = include_str!("../../../../docs/provisioning.md");
    let group = b"factory group key";
    let symmetric =
        provision_codes(AT, &symmetric(), Some(group), Select::Id("0000beef")).expect("a code");
    let listed = spec(
        r#"
template: {spec: {modelRef: {name: thermo-hygrometer}}}
attestation: {preRegistered: {items: [{serialNumber: SP-0001, deviceId: socket-a, token: k7Qz-19}]}}
"#,
    );
    let at = PolicyAt {
        name: "sockets",
        ..AT
    };
    let listed = provision_codes(at, &listed, None, Select::Id("socket-a")).expect("a code");
    let connect = connect_code(
        "kitchen-1",
        None,
        &data(&[
            ("username", "smart-home/kitchen-1"),
            ("password", "q8Xv2mN0aLp5Rz7tYc1K"),
            ("http-endpoint", "http://192.0.2.10:8080"),
            ("mqtt-endpoint", "mqtt://192.0.2.10:1883"),
        ]),
    )
    .expect("a code");
    for code in [&symmetric[0], &listed[0], &connect] {
        let uri = code.link.to_uri();
        assert!(
            docs.lines().any(|line| line == uri),
            "docs/provisioning.md shows {uri}"
        );
    }
}
