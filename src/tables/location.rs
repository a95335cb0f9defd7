//! Where the lake lives: the lake URI given in the configuration, and the URL
//! of each table below it (`<lake>/bronze/orders`, `<lake>/silver/order_lines`,
//! `<lake>/quarantine/orders`).

use std::collections::HashMap;
use url::Url;

/// The storage behind a lake URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    /// ADLS Gen2 or Blob storage (`abfss://`, `abfs://`, `az://`, `azure://`).
    Azure,
    /// S3 or an S3-compatible store such as MinIO (`s3://`, `s3a://`).
    S3,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LakeLocation {
    pub root: Url,
    pub kind: StoreKind,
}

impl LakeLocation {
    /// Parses a lake URI. A plain path (relative or absolute) is a local
    /// directory; it is created on first use.
    pub fn parse(uri: &str) -> Result<LakeLocation, String> {
        let uri = uri.trim();
        if uri.is_empty() {
            return Err("is empty".into());
        }
        let has_scheme = uri.contains("://");
        let root = if has_scheme {
            Url::parse(uri).map_err(|e| format!("`{uri}` is not a valid URI: {e}"))?
        } else {
            let path = std::path::absolute(uri).map_err(|e| format!("`{uri}`: {e}"))?;
            Url::from_directory_path(&path).map_err(|_| format!("`{uri}` is not a usable directory path"))?
        };
        let kind = match root.scheme() {
            "file" => StoreKind::Local,
            "abfss" | "abfs" | "az" | "azure" | "adl" => StoreKind::Azure,
            "s3" | "s3a" => StoreKind::S3,
            other => {
                return Err(format!(
                    "scheme `{other}` is not supported; use a path, file://, abfss://, az:// or s3://"
                ))
            }
        };
        if kind != StoreKind::Local && root.host_str().is_none_or(str::is_empty) {
            return Err(format!("`{uri}` names no container or bucket"));
        }
        let mut root = root;
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        Ok(LakeLocation { root, kind })
    }

    /// The URL of a table at `relative` (e.g. `bronze/orders`) below the lake root.
    pub fn table_url(&self, relative: &str) -> Url {
        self.root.join(&format!("{relative}/")).expect("relative table path joins")
    }
}

/// Refuses, before any request, a cloud lake with no way to authenticate.
/// Without credentials object_store falls back to the cloud metadata endpoint
/// (a managed-identity or instance-profile lookup), which outside the cloud
/// hangs or fails with an error that names nothing the user set.
/// `env` is the process environment (credentials may come from there, as in AKS).
pub fn check_credentials(
    kind: StoreKind,
    storage: &std::collections::BTreeMap<String, crate::config::Secret>,
    env: &HashMap<String, String>,
) -> Result<(), String> {
    let has = |keys: &[&str]| keys.iter().any(|k| storage.contains_key(*k) || env.contains_key(&k.to_ascii_uppercase()));
    match kind {
        StoreKind::Local => Ok(()),
        StoreKind::Azure => {
            let ok = has(&["azure_storage_use_emulator", "use_emulator"])
                || has(&["azure_storage_account_key", "azure_storage_access_key", "account_key", "access_key"])
                || has(&["azure_storage_sas_key", "azure_storage_sas_token", "sas_key", "sas_token"])
                || has(&["azure_storage_token", "bearer_token"])
                || has(&["azure_client_secret", "azure_storage_client_secret", "client_secret"])
                || has(&["azure_federated_token_file", "federated_token_file"])
                // a user-assigned managed identity is named by its client, object or resource id
                || has(&["azure_client_id", "azure_storage_client_id", "azure_object_id", "azure_msi_resource_id", "azure_msi_endpoint"])
                || has(&["azure_use_azure_cli", "azure_skip_signature"]);
            if ok {
                Ok(())
            } else {
                Err("no credentials for the Azure lake: set lake.storage.azure_storage_account_key, \
                     lake.storage.azure_storage_sas_key, a service principal (azure_client_id, azure_client_secret, \
                     azure_tenant_id), workload identity (AZURE_FEDERATED_TOKEN_FILE with azure_client_id and \
                     azure_tenant_id), azure_client_id of a managed identity, or azure_storage_use_emulator = true"
                    .into())
            }
        }
        StoreKind::S3 => {
            let ok = (has(&["aws_access_key_id", "access_key_id"]) && has(&["aws_secret_access_key", "secret_access_key"]))
                || has(&["aws_web_identity_token_file", "aws_container_credentials_relative_uri", "aws_container_credentials_full_uri"])
                || has(&["aws_skip_signature", "aws_profile"]);
            if ok {
                Ok(())
            } else {
                Err("no credentials for the S3 lake: set lake.storage.aws_access_key_id and \
                     lake.storage.aws_secret_access_key (or AWS_WEB_IDENTITY_TOKEN_FILE for IRSA)"
                    .into())
            }
        }
    }
}

/// Makes the Azure and S3 object stores known to delta-rs. Idempotent.
pub fn register_object_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        deltalake::azure::register_handlers(None);
        deltalake::aws::register_handlers(None);
    });
}

/// Storage options as delta-rs takes them.
pub fn storage_options(storage: &std::collections::BTreeMap<String, crate::config::Secret>) -> HashMap<String, String> {
    storage.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_store() {
        let l = LakeLocation::parse("abfss://lake@acct.dfs.core.windows.net/orders").unwrap();
        assert_eq!(l.kind, StoreKind::Azure);
        assert_eq!(l.table_url("bronze/orders").as_str(), "abfss://lake@acct.dfs.core.windows.net/orders/bronze/orders/");
        assert_eq!(LakeLocation::parse("az://lake/x").unwrap().kind, StoreKind::Azure);
        assert_eq!(LakeLocation::parse("s3://bucket").unwrap().table_url("silver/order_lines").as_str(), "s3://bucket/silver/order_lines/");
        let local = LakeLocation::parse("./lake").unwrap();
        assert_eq!(local.kind, StoreKind::Local);
        assert!(local.root.as_str().starts_with("file:///") && local.root.as_str().ends_with("/lake/"));
        assert!(LakeLocation::parse("ftp://x/y").unwrap_err().contains("not supported"));
        assert!(LakeLocation::parse("s3:///nobucket").unwrap_err().contains("no container or bucket"));
    }
}
