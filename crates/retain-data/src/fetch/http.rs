//! HTTP for fetching: one agent per fetch (system trust store, timeouts, proxies) and GET
//! requests whose errors say whether the host itself is unreachable.

use std::io::Read;

use super::FetchOptions;

/// An agent configured from `options`; built only when a source needs the network.
pub(super) fn make_agent(options: &FetchOptions<'_>) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs())
                .build(),
        )
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.read_timeout))
        .user_agent(concat!("retain-data/", env!("CARGO_PKG_VERSION")));
    if !options.use_env_proxy {
        cfg = cfg.proxy(None);
    }
    cfg.build().into()
}

/// The system's trust store (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), like
/// curl, npm and pip use, so HTTPS works behind TLS-inspecting corporate or
/// sandbox proxies whose CA is installed locally; ureq's default (bundled
/// Mozilla roots) rejects those. Falls back to the bundled roots when the
/// system store is empty or unreadable.
fn root_certs() -> ureq::tls::RootCerts {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return ureq::tls::RootCerts::WebPki;
    }
    found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .into()
}

/// Errors of one HTTP request; `fatal_for_source` means the host itself is
/// unreachable, so trying its other files would only repeat the timeout.
pub(super) struct HttpError {
    msg: String,
    pub(super) fatal_for_source: bool,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// GETs `url`, returning the body as a stream; a non-success status is an error.
pub(super) fn http_get(agent: &ureq::Agent, url: &str) -> Result<impl Read + 'static, HttpError> {
    match agent.get(url).call() {
        Ok(resp) => Ok(resp.into_body().into_reader()),
        Err(ureq::Error::StatusCode(code)) => Err(HttpError {
            msg: format!("{url}: HTTP status {code}"),
            fatal_for_source: false,
        }),
        Err(e) => Err(HttpError {
            msg: format!("{url}: {e}"),
            fatal_for_source: true,
        }),
    }
}
