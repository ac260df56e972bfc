//! `mqtt5-broker tls init`: makes a local certificate authority and a server certificate for
//! this host, so that MQTT over TLS and HTTPS for the page work on a LAN without a public CA.
//!
//! Four files go into one directory (by default `tls/` beside the database):
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.crt` | the CA's certificate: what clients are given to trust the broker | 0644 |
//! | `ca.key` | the CA's private key (only needed to make another server certificate) | 0600 |
//! | `server.crt` | the server certificate, signed by the CA | 0644 |
//! | `server.key` | its private key | 0600 |
//!
//! Keys are ECDSA P-256 (every TLS client of the last decade accepts them, and signing is cheap
//! on a Raspberry Pi), made by rcgen on the ring backend (no cmake, no C toolchain beyond cc).
//! The server certificate names `localhost`, the host name (and `HOST.local`, its mDNS name),
//! `127.0.0.1`, `::1`, every non-loopback, non-link-local address of the host's interfaces
//! (`getifaddrs`), and the extra `--name` / `--ip` given.
//!
//! Validity: the CA 10 years (it is what every client is given once; replacing it means touching
//! every client), the server certificate 2 years: short enough to be renewed while someone still
//! knows how, and below the 825 days Apple's systems accept for a TLS server certificate even
//! from a CA the user installed (Chrome's 398-day rule is for public CAs only). Both start one day
//! in the past, so a client whose clock is a little behind still accepts them.
//!
//! Existing files are never replaced unless `--force`; nothing is written when one exists.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;
/// How long the server certificate is valid (below Apple's 825-day limit).
pub const SERVER_DAYS: i64 = 730;
/// How far in the past both start (clients with a clock a little behind).
const BACKDATE: Duration = Duration::days(1);

/// The four files' names, in the directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

/// What `tls init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Where the files go.
    pub dir: PathBuf,
    /// DNS names besides `localhost` and the host's own.
    pub names: Vec<String>,
    /// Addresses besides loopback and the interfaces'.
    pub ips: Vec<IpAddr>,
    /// Replace existing files.
    pub force: bool,
}

/// What `tls init` made.
#[derive(Debug, Clone)]
pub struct Made {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// The host name found (if any), for the examples.
    pub hostname: Option<String>,
    /// The DNS names in the server certificate.
    pub names: Vec<String>,
    /// The addresses in the server certificate.
    pub ips: Vec<IpAddr>,
    pub ca_not_after: OffsetDateTime,
    pub server_not_after: OffsetDateTime,
}

impl Made {
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// The default directory: `tls/` beside the database file.
pub fn default_dir(db: &Path) -> PathBuf {
    match db.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("tls"),
        _ => PathBuf::from("tls"),
    }
}

/// Makes the CA and the server certificate into `opts.dir`. Errors are one line for a person.
pub fn init(opts: &InitOptions) -> Result<Made, String> {
    let files = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY];
    if !opts.force {
        let existing: Vec<String> = files
            .iter()
            .map(|f| opts.dir.join(f))
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(format!(
                "{} already exist{}: nothing was written (--force replaces the four files; \
                 --dir DIR writes elsewhere)",
                existing.join(", "),
                if existing.len() == 1 { "s" } else { "" }
            ));
        }
    }

    let hostname = hostname();
    let mut names = vec!["localhost".to_string()];
    if let Some(h) = &hostname {
        names.push(h.clone());
        if !h.contains('.') {
            names.push(format!("{h}.local"));
        }
    }
    for n in &opts.names {
        let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
        if n.is_empty() || !n.is_ascii() || n.contains(char::is_whitespace) {
            return Err(format!("--name '{n}' is not a DNS name"));
        }
        names.push(n);
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));

    let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    ips.extend(interface_addresses());
    ips.extend(opts.ips.iter().copied());
    let mut seen = std::collections::HashSet::new();
    ips.retain(|ip| seen.insert(*ip));

    let now = OffsetDateTime::now_utc();
    let label = hostname.as_deref().unwrap_or("localhost");

    let ca_key = new_key()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("mqtt5-broker local CA ({label})"),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "mqtt5-broker");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - BACKDATE;
    ca.not_after = now + Duration::days(CA_DAYS);
    ca.serial_number = Some(serial());
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| format!("cannot make the CA certificate: {e}"))?;

    let server_key = new_key()?;
    let mut server = CertificateParams::default();
    server.distinguished_name = rcgen::DistinguishedName::new();
    server.distinguished_name.push(DnType::CommonName, label);
    server
        .distinguished_name
        .push(DnType::OrganizationName, "mqtt5-broker");
    server.subject_alt_names = Vec::new();
    for n in &names {
        let dns = n
            .clone()
            .try_into()
            .map_err(|e| format!("'{n}' cannot be a certificate name: {e}"))?;
        server.subject_alt_names.push(SanType::DnsName(dns));
    }
    server
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = now - BACKDATE;
    server.not_after = now + Duration::days(SERVER_DAYS);
    server.serial_number = Some(serial());
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(|e| format!("cannot make the server certificate: {e}"))?;

    fs::create_dir_all(&opts.dir)
        .map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
    let dir = fs::canonicalize(&opts.dir)
        .map_err(|e| format!("cannot use {}: {e}", opts.dir.display()))?;
    // Keys first: a certificate without its key is of no use, the reverse at least is not public.
    write_file(
        &dir.join(CA_KEY),
        &ca_key.serialize_pem(),
        0o600,
        opts.force,
    )?;
    write_file(&dir.join(CA_CERT), &ca_cert.pem(), 0o644, opts.force)?;
    write_file(
        &dir.join(SERVER_KEY),
        &server_key.serialize_pem(),
        0o600,
        opts.force,
    )?;
    write_file(
        &dir.join(SERVER_CERT),
        &server_cert.pem(),
        0o644,
        opts.force,
    )?;

    Ok(Made {
        dir,
        hostname,
        names,
        ips,
        ca_not_after: now + Duration::days(CA_DAYS),
        server_not_after: now + Duration::days(SERVER_DAYS),
    })
}

/// What `tls init` prints: the files, the config lines, what to give clients.
pub fn report(made: &Made) -> String {
    let p = |f: &str| made.path(f).display().to_string();
    let date =
        |t: OffsetDateTime| format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let host = made.hostname.as_deref().unwrap_or("localhost");
    let sans: Vec<String> = made
        .names
        .iter()
        .cloned()
        .chain(made.ips.iter().map(IpAddr::to_string))
        .collect();
    format!(
        "Made a local CA and a server certificate (ECDSA P-256) in {dir}:\n\
         \x20 {CA_CERT}      the CA certificate, valid until {ca_until}: give this file to clients\n\
         \x20 {CA_KEY}      the CA's private key (mode 0600): keep it here, never give it out\n\
         \x20 {SERVER_CERT}  the server certificate, valid until {server_until}, for:\n\
         \x20             {sans}\n\
         \x20 {SERVER_KEY}  the server's private key (mode 0600)\n\
         \n\
         Add to the config file (--config FILE), for MQTT over TLS:\n\
         \x20 tls_listen 0.0.0.0:8883\n\
         \x20 certfile {cert}\n\
         \x20 keyfile {key}\n\
         and for HTTPS on the control page, with the same certificate:\n\
         \x20 web_tls_from_mqtt true\n\
         (or for the page alone: web_certfile {cert} and web_keyfile {key})\n\
         \n\
         Clients trust the broker with {ca}, e.g.:\n\
         \x20 mosquitto_sub --cafile {ca} -h {host} -p 8883 -t '#' -v\n\
         \x20 curl --cacert {ca} https://{host}:8082/api/status\n\
         Browsers: import {CA_CERT} as a trusted certificate authority.\n\
         Renew the server certificate before {server_until}; a new address or name needs a new one \
         (tls init --force makes a new CA too: clients then need the new {CA_CERT}).",
        dir = made.dir.display(),
        ca_until = date(made.ca_not_after),
        server_until = date(made.server_not_after),
        sans = sans.join(", "),
        cert = p(SERVER_CERT),
        key = p(SERVER_KEY),
        ca = p(CA_CERT),
    )
}

fn new_key() -> Result<KeyPair, String> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| format!("cannot make a key: {e}"))
}

/// A random positive 128-bit serial number (RFC 5280: unique per CA, at most 20 bytes).
fn serial() -> SerialNumber {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    // Positive, and 16 bytes long in DER (no leading zero to strip).
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&b)
}

/// Writes `text` to `path` with `mode`, never following or replacing an existing file unless
/// `force` (then it is removed first, so the new file gets `mode` whatever the old one had).
fn write_file(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), String> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot replace {}: {e}", path.display())),
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The host name (`gethostname(2)`), if it is a usable DNS name.
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        fs::read_to_string("/proc/sys/kernel/hostname").ok()?
    };
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name != "localhost"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

/// The host's own addresses (`getifaddrs(3)`), without loopback and link-local ones (those
/// need an interface to mean anything), in interface order.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        log::warn!(
            "tls init: cannot list the network interfaces: {}",
            std::io::Error::last_os_error()
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            if let Some(ip) = ip.filter(|ip| usable(*ip)) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Not loopback, not unspecified, not link-local (169.254/16, fe80::/10).
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_is_beside_the_database() {
        assert_eq!(
            default_dir(Path::new("/var/lib/m/broker.db")),
            PathBuf::from("/var/lib/m/tls")
        );
        assert_eq!(
            default_dir(Path::new("mqtt5-broker.db")),
            PathBuf::from("tls")
        );
    }

    #[test]
    fn usable_addresses() {
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.2",
            "::1",
            "::",
            "fe80::1",
        ] {
            assert!(!usable(bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.168.1.5", "10.0.0.2", "fd00::5", "2001:db8::1"] {
            assert!(usable(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let (a, b) = (serial().to_bytes(), serial().to_bytes());
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
        assert_ne!(a, b);
    }
}
