//! `berry plugin new`: a plugin crate that builds as-is, ready to edit. It carries
//! its own copy of the SDK (`berry-plugin-sdk/`, from the binary), so it builds
//! wherever it is, with nothing but rustup and the `wasm32-wasip2` target.

use std::path::{Path, PathBuf};

use crate::config::PluginKind;

/// Write a new plugin crate named `name` into `dir` (which must not exist yet). The
/// SDK is copied into it, unless `sdk` names one to depend on instead.
pub fn new_plugin(name: &str, kind: PluginKind, dir: &Path, sdk: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!("{name:?}: use lowercase letters, digits and _, starting with a letter"));
    }
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let sdk_path = match sdk {
        Some(path) => std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => PathBuf::from(super::VENDORED_DIR),
    };
    let sdk_dependency = format!("berry-plugin-sdk = {{ path = {:?} }}", sdk_path.display().to_string());
    let (kind_word, source) = match kind {
        PluginKind::Strategy => ("strategy", strategy_source(name)),
        PluginKind::Auth => ("auth", auth_source(name)),
    };
    let files = [
        (PathBuf::from("Cargo.toml"), cargo_toml(name, &sdk_dependency)),
        (PathBuf::from(".cargo/config.toml"), "[build]\ntarget = \"wasm32-wasip2\"\n".to_string()),
        (PathBuf::from(".gitignore"), "/target\n".to_string()),
        (PathBuf::from("src/lib.rs"), source),
        (PathBuf::from("README.md"), readme(name, kind_word)),
    ];
    let mut written = Vec::new();
    for (relative, text) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    if sdk.is_none() {
        written.extend(super::export(&dir.join(super::VENDORED_DIR), false)?);
    }
    Ok(written)
}

fn type_name(name: &str) -> String {
    name.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_ascii_uppercase() + &p[1..]).collect()
}

fn cargo_toml(name: &str, sdk_dependency: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK, copied in by `berry plugin new` (`berry plugin sdk --out` writes it anew).
{sdk_dependency}

# A plugin is its own workspace, wherever it is created.
[workspace]

[profile.release]
opt-level = "s"
"#
    )
}

fn strategy_source(name: &str) -> String {
    let ty = type_name(name);
    format!(
        r#"//! `{name}`: a Berry routing strategy.

use berry_plugin_sdk::strategy::{{Context, Strategy, weighted_order}};

struct {ty};

impl Strategy for {ty} {{
    /// `config` is the `[plugins.{name}] config` table as JSON ("{{}}" when absent).
    fn new(_config: &str) -> Result<Self, String> {{
        Ok({ty})
    }}

    /// Rank the backends, best first; Berry retries down this list.
    fn select(&self, ctx: &Context) -> Vec<u32> {{
        let weights: Vec<f64> = (0..ctx.len()).map(|i| ctx.recovering_weight(i)).collect();
        weighted_order(&ctx.usable(), &weights, ctx.request.random)
    }}
}}

berry_plugin_sdk::export_strategy!({ty});
"#
    )
}

fn auth_source(name: &str) -> String {
    let ty = type_name(name);
    format!(
        r#"//! `{name}`: a Berry auth policy.

use berry_plugin_sdk::auth::{{AuthPolicy, AuthRequest, Denial, Principal, UserIndex, UserInfo}};

struct {ty} {{
    /// The `[users]` table, found by token (plaintext `token` or `token_sha256`).
    users: UserIndex,
}}

impl AuthPolicy for {ty} {{
    /// `config` is the `[plugins.{name}] config` table as JSON; `users` the `[users]` table.
    fn new(_config: &str, users: Vec<UserInfo>) -> Result<Self, String> {{
        Ok({ty} {{ users: UserIndex::new(users)? }})
    }}

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {{
        let user = self
            .users
            .find(&request.token)
            .ok_or_else(|| Denial::unauthorized("invalid_api_key", "Incorrect API key provided."))?;
        if !user.enabled {{
            return Err(Denial::unauthorized("user_disabled", "This API key belongs to a disabled user."));
        }}
        // Its models, tags and limits; admin when tagged "admin".
        Ok(Principal::of(user))
    }}
}}

berry_plugin_sdk::export_auth!({ty});
"#
    )
}

fn readme(name: &str, kind: &str) -> String {
    format!(
        "# {name}\n\nA Berry {kind} plugin.\n\n```sh\nrustup target add wasm32-wasip2   # once per machine\n\
         cargo build --release               # → target/wasm32-wasip2/release/{name}.wasm\n\
         berry plugin test target/wasm32-wasip2/release/{name}.wasm --config berry.toml\n```\n\n\
         `berry-plugin-sdk/` is the SDK this crate builds against, copied from the `berry` binary that made it;\n\
         `berry plugin sdk --out berry-plugin-sdk --force` replaces it with the SDK of another binary.\n\n\
         Load it:\n\n```toml\n[plugins.{name}]\npath = \"path/to/target/wasm32-wasip2/release/{name}.wasm\"\nkind = \"{kind}\"\n```\n\n\
         Rebuild while the gateway runs and it swaps the new version in (or `PUT /admin/plugins/{name}` with the file as body).\n"
    )
}
