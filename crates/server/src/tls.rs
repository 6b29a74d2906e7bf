//! The web port's certificate: the configured one, or a self-signed one made
//! on first run and kept in the data folder so browsers see the same
//! certificate across restarts.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

pub fn ensure_cert(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<CertFiles> {
    if let (Some(c), Some(k)) = (cert, key) {
        return Ok(CertFiles {
            cert: c.to_path_buf(),
            key: k.to_path_buf(),
            generated: false,
        });
    }
    if cert.is_some() != key.is_some() {
        anyhow::bail!("web.cert and web.key must be given together");
    }
    let cert = data_dir.join("cert.pem");
    let key = data_dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok(CertFiles {
            cert,
            key,
            generated: false,
        });
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    Ok(CertFiles {
        cert,
        key,
        generated: true,
    })
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}
