use std::net::{IpAddr, Ipv4Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::*;

/// A CA's PEM and a client certificate it signed for `cn` (DER).
fn issue(ca_name: &str, cn: &str) -> (String, CertificateDer<'static>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::new()).expect("CA params");
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::new()).expect("params");
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    (ca_cert.pem(), cert.der().clone())
}

#[test]
fn a_client_certificate_counts_only_when_the_policy_ca_signed_it() {
    let now = jiff::Timestamp::now();
    let (ca, good) = issue("plant CA", "0000f00d");
    let (_, foreign) = issue("another CA", "0000f00d");
    assert_eq!(
        x509::verify(ca.as_bytes(), &[good], now).as_deref(),
        Ok("0000f00d")
    );
    let refused = x509::verify(ca.as_bytes(), &[foreign], now).expect_err("another CA");
    assert!(
        refused.contains("not signed by the policy's CA"),
        "{refused}"
    );
    assert!(x509::verify(b"no PEM here", &[], now).is_err());
}

#[test]
fn maxdevices_counts_members_and_creations_under_way_once_each() {
    let p = Provisioning::new(20, 1.0);
    let policy = Identity::new("plant", "probes");
    p.reserve(&policy, Some(2), "a").expect("first");
    p.reserve(&policy, Some(2), "b").expect("second");
    let third = p.reserve(&policy, Some(2), "c").expect_err("third");
    assert_eq!(third.reason, "LimitReached");
    // A created device is counted once, as a member, while its creation is still open.
    let mut device = Device::default();
    device.metadata.name = Some("a".into());
    device.metadata.namespace = Some("plant".into());
    devplane_core::provisioning::mark_policy(&mut device.metadata, "probes");
    p.device_applied(&device, &Identity::new("plant", "a"));
    assert_eq!(p.members.lock().count(&policy), 2);
    p.release(&policy, "b");
    p.release(&policy, "a");
    assert_eq!(p.members.lock().count(&policy), 1);
    p.device_gone(&Identity::new("plant", "a"));
    assert_eq!(p.members.lock().count(&policy), 0);
}

#[test]
fn an_address_is_limited_after_its_burst_of_refusals_and_earns_them_back() {
    let p = Provisioning::new(3, 1000.0);
    let source = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    for _ in 0..3 {
        assert!(!p.limited(source));
        p.refused_from(source);
    }
    p.buckets.lock().get_mut(&source).expect("bucket").at = Instant::now();
    assert!(p.limited(source));
    assert!(!p.limited(other));
    std::thread::sleep(Duration::from_millis(5));
    assert!(!p.limited(source), "refill earns one back");
}
