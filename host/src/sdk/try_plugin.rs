//! `berry plugin test PATH [--config FILE]`: the trial a gateway gives every plugin
//! version before it serves (`plugin::trial`), run for the plugin's author, with a
//! report of every situation.

use std::path::Path;

use crate::config::{Config, PluginKind};
use crate::plugin::trial::Report;
use crate::plugin::{AuthPlugin, Limits, StrategyPlugin, Versions, compile};

/// Load the plugin at `path` for the routes or users of `config` (a small sample of
/// its own without one) and try it. `kind` overrides what the plugin exports.
pub fn run(path: &Path, config: Option<&Path>, kind: Option<PluginKind>) -> Result<Report, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    let versions = Versions::default();
    let compiled = compile(&name, &path.display().to_string(), &bytes, &versions).map_err(|e| e.to_string())?;
    let kind = match kind.or_else(|| crate::plugin::kind_of(&compiled)) {
        Some(kind) => kind,
        None => {
            return Err(format!("{}: exports neither berry:gateway/strategy nor berry:gateway/auth", path.display()));
        }
    };
    let config = match config {
        Some(file) => Config::load(file).map_err(|e| format!("{} is invalid:\n{e}", file.display()))?,
        None => sample_config()?,
    };
    // The entry that loads this very file, if the config has one: its settings apply.
    let same_file = |p: &Path| p.canonicalize().ok() == path.canonicalize().ok();
    let spec = config.plugins.values().find(|s| s.path.as_deref().is_some_and(same_file));
    let limits = spec.map_or_else(Limits::default, |s| s.limits);
    let plugin_config = spec.map_or_else(|| "{}".to_string(), |s| s.config_json.clone());
    let refused = |e: crate::plugin::PluginError| {
        let mut report = Report::new(true);
        report.push("load (instantiate and configure)", "refused", crate::plugin::trial::Verdict::Fail(e.to_string()));
        report
    };
    Ok(match kind {
        PluginKind::Strategy => {
            // The routes the config gives this plugin, else every route.
            let used: Vec<_> = config.models.iter().filter(|m| spec.is_some_and(|s| s.name == m.strategy)).collect();
            let models: Vec<_> = if used.is_empty() { config.models.iter().collect() } else { used };
            let routes = crate::gateway::wit_routes(&config, models.into_iter());
            match StrategyPlugin::untried(compiled, limits, plugin_config, routes) {
                Ok(plugin) => plugin.trial(true),
                Err(e) => refused(e),
            }
        }
        PluginKind::Auth => {
            let users = crate::gateway::wit_users(&config);
            let ttl = std::time::Duration::ZERO;
            match AuthPlugin::untried(compiled, limits, plugin_config, users, ttl) {
                Ok(plugin) => plugin.trial(true),
                Err(e) => refused(e),
            }
        }
    })
}

/// Without `--config`: routes of one, two and four backends (one disabled, tagged,
/// billed either way) and users with plaintext and hashed tokens, one disabled, one
/// admin.
fn sample_config() -> Result<Config, String> {
    let text = format!(
        r#"
[providers.alpha]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-sample"
models = ["a1", "a2"]
[providers.beta]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-sample"
models = ["b1", "b2"]

[models.one]
name = "sample-one"
[[models.one.backends]]
provider = "alpha"
model = "a1"

[models.two]
name = "sample-two"
[[models.two.backends]]
provider = "alpha"
model = "a1"
weight = 3
tags = ["premium"]
[[models.two.backends]]
provider = "beta"
model = "b1"
tags = ["cheap"]

[models.four]
name = "sample-four"
[[models.four.backends]]
provider = "alpha"
model = "a1"
priority = 2
[[models.four.backends]]
provider = "alpha"
model = "a2"
enabled = false
[[models.four.backends]]
provider = "beta"
model = "b1"
priority = 1
billing_mode = "per_request"
[[models.four.backends]]
provider = "beta"
model = "b2"
weight = 0.5

[users.alice]
token = "berry-sample-alice"
allowed_models = ["sample-one"]
[users.bob]
token_sha256 = "{}"
[users.carol]
token = "berry-sample-carol"
enabled = false
[users.root]
token = "berry-sample-root"
tags = ["admin"]
"#,
        crate::plugin::sha256_hex(b"berry-sample-bob")
    );
    crate::config::parse(&text, &|_| None).map_err(|e| format!("the sample configuration: {e}"))
}
