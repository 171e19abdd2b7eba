//! A test CA and a leaf certificate it signed, generated in memory with rcgen at test time: no
//! key is ever committed.
//!
//! The one place the tests make certificates: `wsx`'s tests use it through `common`, and
//! `wsx-cli`'s tests include this file by path from their own `common`.

/// A test CA and a leaf it signed, as PEM; and a client certificate it signed, for mutual TLS.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) leaf_pem: String,
    pub(crate) leaf_key_pem: String,
    pub(crate) client_pem: String,
    pub(crate) client_key_pem: String,
}

impl Pki {
    /// A leaf for `localhost` and `127.0.0.1`.
    pub(crate) fn generate() -> Self {
        Self::generate_for(&["localhost", "127.0.0.1"])
    }

    /// A leaf for `names` (DNS names or IP addresses).
    pub(crate) fn generate_for(names: &[&str]) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "wsx test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = CertificateParams::new(names).unwrap().signed_by(&leaf_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "wsx test client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }
}
