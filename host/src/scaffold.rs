//! `berry plugin new`: a plugin crate that builds as-is, ready to edit.

use std::path::{Path, PathBuf};

use crate::config::PluginKind;

/// Where the SDK lives when this binary was built from a checkout; used as a path
/// dependency so a new plugin builds without a registry.
fn default_sdk_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("plugin-sdk");
    path.canonicalize().ok().filter(|p| p.join("Cargo.toml").exists())
}

/// Write a new plugin crate named `name` into `dir` (which must not exist yet).
pub fn new_plugin(name: &str, kind: PluginKind, dir: &Path, sdk: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(format!("{name:?}: use lowercase letters, digits and _, starting with a letter"));
    }
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let sdk_dependency = match sdk.map(Path::to_path_buf).or_else(default_sdk_path) {
        Some(path) => format!("berry-plugin-sdk = {{ path = {:?} }}", path.display().to_string()),
        None => format!("berry-plugin-sdk = \"{}\"", crate::plugin::version::WIT_VERSION),
    };
    let (kind_word, source) = match kind {
        PluginKind::Strategy => ("strategy", strategy_source(name)),
        PluginKind::Auth => ("auth", auth_source(name)),
    };
    let files = [
        (PathBuf::from("Cargo.toml"), cargo_toml(name, &sdk_dependency)),
        (PathBuf::from(".cargo/config.toml"), "[build]\ntarget = \"wasm32-wasip2\"\n".to_string()),
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
{sdk_dependency}

# A plugin is its own workspace, wherever it is created.
[workspace]

[profile.release]
opt-level = "s"
lto = true
panic = "abort"
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

use berry_plugin_sdk::auth::{{AuthPolicy, AuthRequest, Denial, Principal, RateLimits, UserInfo, constant_time_eq}};

struct {ty} {{
    users: Vec<UserInfo>,
}}

impl AuthPolicy for {ty} {{
    /// `config` is the `[plugins.{name}] config` table as JSON; `users` the `[users]` table.
    fn new(_config: &str, users: Vec<UserInfo>) -> Result<Self, String> {{
        Ok({ty} {{ users }})
    }}

    fn authorize(&self, request: &AuthRequest) -> Result<Principal, Denial> {{
        let user = self
            .users
            .iter()
            .find(|u| !u.token.is_empty() && constant_time_eq(u.token.as_bytes(), request.token.as_bytes()))
            .ok_or_else(|| Denial::unauthorized("invalid_api_key", "Incorrect API key provided."))?;
        if !user.enabled {{
            return Err(Denial::unauthorized("user_disabled", "This API key belongs to a disabled user."));
        }}
        Ok(Principal {{
            id: user.id.clone(),
            allowed_models: user.allowed_models.clone(),
            tags: user.tags.clone(),
            limits: RateLimits {{ per_minute: user.limits.per_minute, per_hour: user.limits.per_hour, per_day: user.limits.per_day }},
            admin: false,
        }})
    }}
}}

berry_plugin_sdk::export_auth!({ty});
"#
    )
}

fn readme(name: &str, kind: &str) -> String {
    format!(
        "# {name}\n\nA Berry {kind} plugin.\n\n```sh\ncargo build --release   # → target/wasm32-wasip2/release/{name}.wasm\n```\n\n\
         Load it:\n\n```toml\n[plugins.{name}]\npath = \"path/to/target/wasm32-wasip2/release/{name}.wasm\"\nkind = \"{kind}\"\n```\n\n\
         Rebuild while the gateway runs and it swaps the new version in (or `PUT /admin/plugins/{name}` with the file as body).\n"
    )
}
