//! What a reload changed, in words, for the log line of every applied reload: users,
//! permissions, models, providers, plugins and settings added, removed or changed.
//! Changes that widen access (a new user, more models, admin rights, a lifted
//! limit) are listed apart, so the log says loudly when a save gives more away.

use std::collections::BTreeSet;

use super::Snapshot;
use crate::config::{Config, User};

/// The changes from one snapshot to the next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub all: Vec<String>,
    /// The subset of `all` that widens who may do what.
    pub widened: Vec<String>,
}

impl Changes {
    fn note(&mut self, change: String) {
        self.all.push(change);
    }

    fn widen(&mut self, change: String) {
        self.widened.push(change.clone());
        self.all.push(change);
    }
}

pub fn between(old: &Snapshot, new: &Snapshot) -> Changes {
    let mut changes = Changes::default();
    users(&old.config, &new.config, &mut changes);
    models(&old.config, &new.config, &mut changes);
    providers(&old.config, &new.config, &mut changes);
    plugins(old, new, &mut changes);
    settings(&old.config, &new.config, &mut changes);
    changes
}

fn users(old: &Config, new: &Config, changes: &mut Changes) {
    let old_by_key = |key: &str| old.users.iter().find(|u| u.key == key);
    for u in &new.users {
        let Some(before) = old_by_key(&u.key) else {
            let models =
                if u.allowed_models.is_empty() { "every model".to_string() } else { u.allowed_models.join(", ") };
            if u.enabled {
                changes.widen(format!("user {} added (may use {models})", u.key));
            } else {
                changes.note(format!("user {} added, disabled", u.key));
            }
            continue;
        };
        user(before, u, changes);
    }
    for u in old.users.iter().filter(|u| !new.users.iter().any(|n| n.key == u.key)) {
        changes.note(format!("user {} removed", u.key));
    }
}

fn user(old: &User, new: &User, changes: &mut Changes) {
    let key = &new.key;
    match (old.enabled, new.enabled) {
        (false, true) => changes.widen(format!("user {key} enabled")),
        (true, false) => changes.note(format!("user {key} disabled")),
        _ => {}
    }
    if old.allowed_models != new.allowed_models {
        let (before, after): (BTreeSet<&str>, BTreeSet<&str>) = (
            old.allowed_models.iter().map(String::as_str).collect(),
            new.allowed_models.iter().map(String::as_str).collect(),
        );
        if after.is_empty() {
            changes.widen(format!("user {key}: allowed_models widened to every model"));
        } else if before.is_empty() {
            changes.note(format!("user {key}: allowed_models narrowed to {}", join(&after)));
        } else {
            let gained: BTreeSet<&str> = after.difference(&before).copied().collect();
            let lost: BTreeSet<&str> = before.difference(&after).copied().collect();
            if !gained.is_empty() {
                changes.widen(format!("user {key}: allowed_models widened by {}", join(&gained)));
            }
            if !lost.is_empty() {
                changes.note(format!("user {key}: allowed_models narrowed by {}", join(&lost)));
            }
        }
    }
    let admin = |u: &User| u.tags.iter().any(|t| t == "admin");
    if !admin(old) && admin(new) {
        changes.widen(format!("user {key}: now tagged admin"));
    } else if old.tags != new.tags {
        changes.note(format!("user {key}: tags changed"));
    }
    if old.token != new.token || old.token_sha256 != new.token_sha256 {
        changes.note(format!("user {key}: token changed"));
    }
    if old.rate_limit != new.rate_limit {
        let lifted = [
            (old.rate_limit.per_minute, new.rate_limit.per_minute),
            (old.rate_limit.per_hour, new.rate_limit.per_hour),
            (old.rate_limit.per_day, new.rate_limit.per_day),
        ]
        .iter()
        .any(|(before, after)| {
            matches!((before, after), (Some(b), Some(a)) if a > b) || (before.is_some() && after.is_none())
        });
        if lifted {
            changes.widen(format!("user {key}: rate limit raised"));
        } else {
            changes.note(format!("user {key}: rate limit changed"));
        }
    }
}

fn models(old: &Config, new: &Config, changes: &mut Changes) {
    let old_models: std::collections::HashMap<&str, &crate::config::Model> =
        old.models.iter().map(|m| (m.name.as_str(), m)).collect();
    let new_names: std::collections::HashSet<&str> = new.models.iter().map(|m| m.name.as_str()).collect();
    for m in &new.models {
        let Some(before) = old_models.get(m.name.as_str()) else {
            changes.note(format!("model {} added ({} backends, {})", m.name, m.backends.len(), m.strategy));
            continue;
        };
        if before.enabled != m.enabled {
            changes.note(format!("model {} {}", m.name, if m.enabled { "enabled" } else { "disabled" }));
        }
        if before.strategy != m.strategy {
            changes.note(format!("model {}: strategy {} → {}", m.name, before.strategy, m.strategy));
        }
        if format!("{:?}", before.backends) != format!("{:?}", m.backends) {
            changes.note(format!("model {}: backends changed", m.name));
        }
    }
    for m in old.models.iter().filter(|m| !new_names.contains(m.name.as_str())) {
        changes.note(format!("model {} removed", m.name));
    }
}

fn providers(old: &Config, new: &Config, changes: &mut Changes) {
    for (key, p) in &new.providers {
        match old.providers.get(key) {
            None => changes.note(format!("provider {key} added")),
            Some(before) => {
                if before.api_key != p.api_key {
                    changes.note(format!("provider {key}: api_key changed"));
                }
                // The key is a `Secret`: its Debug form never shows it.
                if format!("{before:?}") != format!("{p:?}") && before.api_key == p.api_key {
                    changes.note(format!("provider {key} changed"));
                }
            }
        }
    }
    for key in old.providers.keys().filter(|k| !new.providers.contains_key(*k)) {
        changes.note(format!("provider {key} removed"));
    }
}

fn plugins(old: &Snapshot, new: &Snapshot, changes: &mut Changes) {
    let versions = |s: &Snapshot| -> Vec<(String, String)> {
        s.strategies
            .iter()
            .map(|(name, p)| (name.clone(), p.compiled().hash.to_string()))
            .chain([(s.auth.name().to_string(), s.auth.compiled().hash.to_string())])
            .collect()
    };
    let (before, after) = (versions(old), versions(new));
    for (name, hash) in &after {
        match before.iter().find(|(n, _)| n == name) {
            None => changes.note(format!("plugin {name} loaded (sha256 {})", &hash[..12])),
            Some((_, old_hash)) if old_hash != hash => {
                changes.note(format!("plugin {name} replaced (sha256 {} → {})", &old_hash[..12], &hash[..12]))
            }
            Some(_) => {}
        }
    }
    for (name, _) in before.iter().filter(|(n, _)| !after.iter().any(|(a, _)| a == n)) {
        changes.note(format!("plugin {name} no longer used"));
    }
    if old.config.auth.policy != new.config.auth.policy {
        changes.widen(format!("auth policy {} → {}", old.config.auth.policy, new.config.auth.policy));
    }
}

fn settings(old: &Config, new: &Config, changes: &mut Changes) {
    // Field by field, from the Debug form (secrets print as "***").
    let (before, after) = (format!("{:#?}", old.settings), format!("{:#?}", new.settings));
    let changed: Vec<&str> = after
        .lines()
        .filter(|line| !before.lines().any(|b| b == *line))
        .filter_map(|line| line.trim().split_once(':').map(|(k, _)| k))
        .filter(|k| !k.is_empty() && !k.starts_with(['}', ']', '"']))
        .collect();
    if !changed.is_empty() {
        changes.note(format!("settings changed: {}", changed.join(", ")));
    }
    if old.settings.admin_token != new.settings.admin_token {
        changes.note("settings.admin_token changed".to_string());
    }
}

fn join(set: &BTreeSet<&str>) -> String {
    set.iter().copied().collect::<Vec<_>>().join(", ")
}
