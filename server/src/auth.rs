//! Users, roles and rights: the model, without I/O.
//!
//! A **user** logs in with a password (stored as an argon2id hash) or an
//! API token (stored as a BLAKE2b hash of a 256-bit secret; a token
//! is `lbk_<id>_<secret>`, the id finding it without a scan). A user holds
//! **roles**; a role holds **grants** (rights on the streams whose names
//! start with a prefix: `read`, `write`, `delete`, `metadata`) and
//! **store rights** (`read_all`, `catalog`, `stats`, `scavenge`, `users`,
//! `groups`). What only admins may do: change users and roles (whoever may
//! do so may make itself an admin), take backups (a copy of every stream,
//! password hashes included), read the users stream. A user's rights are
//! the union of its roles'.
//!
//! Rules that hold whatever the grants say:
//! - System streams (names starting with `$`) are covered only by grants
//!   whose prefix starts with `$`: a grant on `""` means every application
//!   stream, not the server's own.
//! - The users stream (`$auth`) is readable only by admins: it holds
//!   password hashes.
//! - A user with a **tenant** `t` is confined to the streams named
//!   `t/...`: its grants' prefixes are read inside that namespace (a grant
//!   on `""` covers `t/` and nothing else), `read_all` and `catalog` show
//!   only the namespace, and store-wide rights (`stats`, `scavenge`,
//!   `users`, `groups`) are never granted to it: they would show or touch
//!   other tenants' data.
//! - The built-in role `admin` may do everything; `reader`, `writer` and
//!   `operator` are the common cases. Built-in roles cannot be changed.

use std::collections::BTreeMap;

use logbook_protocol::auth::{
    Grant, MAX_AUTH_NAME_BYTES, MAX_GRANTS, MAX_PASSWORD_BYTES, MAX_ROLES, MAX_TOKENS_PER_USER,
    MAX_USERS, Role, TokenInfo, UserInfo, WhoAmIOk, validate_auth_name,
};
use serde::{Deserialize, Serialize};

use crate::otlp::hex;

/// A right on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Read its events, subscribe to it, read its metadata.
    Read = 1,
    /// Append to it.
    Write = 2,
    /// Delete or truncate it, or erase it.
    Delete = 4,
    /// Set its metadata.
    Metadata = 8,
}

impl Right {
    const ALL: [(Right, &'static str); 4] = [
        (Right::Read, "read"),
        (Right::Write, "write"),
        (Right::Delete, "delete"),
        (Right::Metadata, "metadata"),
    ];

    /// The right's wire name.
    pub fn name(self) -> &'static str {
        name_in(&Right::ALL, self)
    }
}

/// A right on the whole store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read and subscribe to the global log (filtered to the streams the
    /// user may read, unless admin).
    ReadAll = 1,
    /// List the stream catalog (filtered likewise).
    Catalog = 2,
    /// The server's figures.
    Stats = 4,
    /// Scavenges.
    Scavenge = 16,
    /// List users and roles (changing them is the admins').
    Users = 32,
    /// Manage consumer groups and their parked events.
    Groups = 64,
}

impl Op {
    const ALL: [(Op, &'static str); 6] = [
        (Op::ReadAll, "read_all"),
        (Op::Catalog, "catalog"),
        (Op::Stats, "stats"),
        (Op::Scavenge, "scavenge"),
        (Op::Users, "users"),
        (Op::Groups, "groups"),
    ];

    /// The right's wire name.
    pub fn name(self) -> &'static str {
        name_in(&Op::ALL, self)
    }

    /// Whether a tenant's user may hold it: only rights whose answers can
    /// be confined to the tenant's namespace.
    fn tenant_may_hold(self) -> bool {
        matches!(self, Op::ReadAll | Op::Catalog)
    }
}

/// The stream that holds users and roles.
pub const AUTH_STREAM: &str = "$auth";

/// The user name of a connection that presented `--auth-token`.
pub const ADMIN_TOKEN_USER: &str = "admin-token";
/// The user name of a connection when authentication is off.
pub const ANONYMOUS_USER: &str = "anonymous";

/// `value`'s name in `table`.
fn name_in<T: PartialEq>(table: &[(T, &'static str)], value: T) -> &'static str {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map_or("?", |(_, n)| n)
}

/// `prefixes` sorted, without repeats and without any that a shorter one
/// covers: no prefix left starts another, so at most one can start a
/// given name (the subscription filters' prefix sets, the readable
/// prefixes of a user).
pub fn minimal_prefixes(mut prefixes: Vec<String>) -> Vec<String> {
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut out: Vec<String> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        // Sorted: a prefix covering `p` sorts just before it, or before the
        // names it covered already.
        if !out.last().is_some_and(|q| p.starts_with(q.as_str())) {
            out.push(p);
        }
    }
    out
}

fn parse_bits<T>(names: &[String], table: &[(T, &str)], what: &str) -> Result<u8, String>
where
    T: Copy + Into<u8>,
{
    let mut bits = 0u8;
    for n in names {
        let (v, _) = table.iter().find(|(_, name)| name == n).ok_or_else(|| {
            let known: Vec<_> = table.iter().map(|(_, n)| *n).collect();
            format!("unknown {what} {n:?}; known: {}", known.join(", "))
        })?;
        bits |= (*v).into();
    }
    Ok(bits)
}

fn names_of<T: Copy + Into<u8>>(bits: u8, table: &[(T, &str)]) -> Vec<String> {
    table
        .iter()
        .filter(|(v, _)| bits & (*v).into() != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect()
}

impl From<Right> for u8 {
    fn from(r: Right) -> u8 {
        r as u8
    }
}

impl From<Op> for u8 {
    fn from(o: Op) -> u8 {
        o as u8
    }
}

/// A role as stored: grants with their rights as bits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRole {
    /// (prefix, right bits).
    pub grants: Vec<(String, u8)>,
    /// Op bits.
    pub ops: u8,
}

/// An API token as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// Its id (in the token text).
    pub id: String,
    /// What it is for.
    pub label: String,
    /// Creation time, microseconds since the epoch.
    pub created_us: i64,
    /// Hex of the BLAKE2b-256 of its id and secret.
    pub hash: String,
}

/// A user as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// argon2id PHC string; `None`: tokens only.
    pub password: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// Logins refused.
    pub disabled: bool,
    /// API tokens.
    pub tokens: Vec<StoredToken>,
    /// Drawn anew when the password changes, the user is created, or it is
    /// disabled or enabled: sessions opened under another one end.
    #[serde(default)]
    pub password_generation: u64,
}

/// Every user and role: the document the `$auth` stream's last event
/// holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthDoc {
    /// Users by name.
    pub users: BTreeMap<String, StoredUser>,
    /// Roles by name (built-in ones are not stored).
    pub roles: BTreeMap<String, StoredRole>,
}

const ALL_RIGHTS: u8 = 0x0f;
const ALL_OPS: u8 = 0x77;

/// The built-in roles.
fn builtin(name: &str) -> Option<StoredRole> {
    Some(match name {
        "admin" => StoredRole {
            grants: vec![(String::new(), ALL_RIGHTS), ("$".into(), ALL_RIGHTS)],
            ops: ALL_OPS,
        },
        "reader" => StoredRole {
            grants: vec![(String::new(), Right::Read as u8)],
            ops: Op::ReadAll as u8 | Op::Catalog as u8,
        },
        "writer" => StoredRole {
            grants: vec![(String::new(), Right::Read as u8 | Right::Write as u8)],
            ops: Op::ReadAll as u8 | Op::Catalog as u8,
        },
        // Figures and disk, no events: a catalog right would list nothing
        // (it shows only readable streams), so it has none.
        "operator" => StoredRole {
            grants: Vec::new(),
            ops: Op::Stats as u8 | Op::Scavenge as u8,
        },
        _ => return None,
    })
}

/// Names of the built-in roles.
pub const BUILTIN_ROLES: [&str; 4] = ["admin", "reader", "writer", "operator"];

impl AuthDoc {
    /// A role by name, built-in or stored.
    fn role(&self, name: &str) -> Option<StoredRole> {
        builtin(name).or_else(|| self.roles.get(name).cloned())
    }

    /// Whether anyone must log in: some user exists.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether some enabled user, confined to no tenant, holds `admin` and
    /// can log in (a password or a token).
    pub fn has_admin(&self) -> bool {
        self.users.values().any(|u| {
            !u.disabled
                && u.tenant.is_none()
                && u.roles.iter().any(|r| r == "admin")
                && (u.password.is_some() || !u.tokens.is_empty())
        })
    }

    /// Creates or replaces a user; `password_hash` replaces the stored one
    /// when given.
    pub fn put_user(
        &mut self,
        name: &str,
        password_hash: Option<String>,
        roles: Vec<String>,
        tenant: Option<String>,
        disabled: bool,
    ) -> Result<(), String> {
        validate_auth_name("user", name)?;
        if name == ADMIN_TOKEN_USER || name == ANONYMOUS_USER {
            return Err(format!("{name:?} is reserved"));
        }
        if let Some(t) = &tenant {
            validate_auth_name("tenant", t)?;
        }
        for r in &roles {
            if self.role(r).is_none() {
                return Err(format!("no role named {r:?}"));
            }
        }
        if !self.users.contains_key(name) && self.users.len() >= MAX_USERS {
            return Err(format!("at most {MAX_USERS} users"));
        }
        let mut roles = roles;
        roles.sort();
        roles.dedup();
        let old = self.users.remove(name);
        let was_disabled = old.as_ref().map(|u| u.disabled);
        let (old_password, tokens, generation) = old.map_or((None, Vec::new(), None), |u| {
            (u.password, u.tokens, Some(u.password_generation))
        });
        // A fresh generation when the password changes, the user is new
        // (one deleted and made again must not match the old sessions), or
        // its state flips: drawn at random, so that no two states of a
        // user share one, however many changes a busy connection misses.
        let renew = password_hash.is_some() || was_disabled != Some(disabled);
        let generation = match generation {
            Some(g) if !renew => g,
            _ => random_generation(),
        };
        self.users.insert(
            name.to_owned(),
            StoredUser {
                password: password_hash.or(old_password),
                roles,
                tenant,
                disabled,
                tokens,
                password_generation: generation,
            },
        );
        Ok(())
    }

    /// Deletes a user; false if there was none.
    pub fn delete_user(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    /// Creates or replaces a role.
    pub fn put_role(&mut self, role: &Role) -> Result<(), String> {
        validate_auth_name("role", &role.name)?;
        if builtin(&role.name).is_some() {
            return Err(format!("{:?} is a built-in role", role.name));
        }
        if role.grants.len() > MAX_GRANTS {
            return Err(format!("a role holds at most {MAX_GRANTS} grants"));
        }
        if !self.roles.contains_key(&role.name) && self.roles.len() >= MAX_ROLES {
            return Err(format!("at most {MAX_ROLES} roles"));
        }
        let mut grants = Vec::with_capacity(role.grants.len());
        for g in &role.grants {
            if g.prefix.len() > logbook_protocol::types::MAX_STREAM_NAME_BYTES {
                return Err(format!("grant prefix {:?} is too long", g.prefix));
            }
            grants.push((
                g.prefix.clone(),
                parse_bits(&g.rights, &Right::ALL, "right")?,
            ));
        }
        let ops = parse_bits(&role.ops, &Op::ALL, "store right")?;
        self.roles
            .insert(role.name.clone(), StoredRole { grants, ops });
        Ok(())
    }

    /// Deletes a role, refused while a user holds it.
    pub fn delete_role(&mut self, name: &str) -> Result<bool, String> {
        if builtin(name).is_some() {
            return Err(format!("{name:?} is a built-in role"));
        }
        if let Some((user, _)) = self
            .users
            .iter()
            .find(|(_, u)| u.roles.iter().any(|r| r == name))
        {
            return Err(format!("user {user:?} holds role {name:?}"));
        }
        Ok(self.roles.remove(name).is_some())
    }

    /// Every role, built-in ones first.
    pub fn list_roles(&self) -> Vec<Role> {
        let shown = |name: &str, r: &StoredRole, builtin: bool| Role {
            name: name.to_owned(),
            grants: r
                .grants
                .iter()
                .map(|(prefix, bits)| Grant {
                    prefix: prefix.clone(),
                    rights: names_of(*bits, &Right::ALL),
                })
                .collect(),
            ops: names_of(r.ops, &Op::ALL),
            builtin,
        };
        BUILTIN_ROLES
            .iter()
            .filter_map(|n| builtin(n).map(|r| shown(n, &r, true)))
            .chain(self.roles.iter().map(|(n, r)| shown(n, r, false)))
            .collect()
    }

    /// One role as shown.
    pub fn show_role(&self, name: &str) -> Option<Role> {
        self.list_roles().into_iter().find(|r| r.name == name)
    }

    /// A user as shown.
    pub fn show_user(&self, name: &str) -> Option<UserInfo> {
        let u = self.users.get(name)?;
        Some(UserInfo {
            name: name.to_owned(),
            roles: u.roles.clone(),
            tenant: u.tenant.clone(),
            disabled: u.disabled,
            password: u.password.is_some(),
            tokens: u
                .tokens
                .iter()
                .map(|t| TokenInfo {
                    id: t.id.clone(),
                    label: t.label.clone(),
                    created_us: t.created_us,
                })
                .collect(),
        })
    }

    /// Adds a token to a user.
    pub fn add_token(&mut self, user: &str, token: StoredToken) -> Result<(), String> {
        let u = self
            .users
            .get_mut(user)
            .ok_or_else(|| format!("no user named {user:?}"))?;
        if token.label.len() > MAX_AUTH_NAME_BYTES {
            return Err(format!(
                "a token label has at most {MAX_AUTH_NAME_BYTES} bytes"
            ));
        }
        if u.tokens.len() >= MAX_TOKENS_PER_USER {
            return Err(format!(
                "a user holds at most {MAX_TOKENS_PER_USER} tokens; revoke one first"
            ));
        }
        u.tokens.push(token);
        Ok(())
    }

    /// Revokes a user's token; false if there was none.
    pub fn revoke_token(&mut self, user: &str, id: &str) -> bool {
        self.users.get_mut(user).is_some_and(|u| {
            let before = u.tokens.len();
            u.tokens.retain(|t| t.id != id);
            u.tokens.len() < before
        })
    }

    /// The user holding the token with this id, and the token.
    pub fn token(&self, id: &str) -> Option<(&str, &StoredUser, &StoredToken)> {
        self.users.iter().find_map(|(name, u)| {
            u.tokens
                .iter()
                .find(|t| t.id == id)
                .map(|t| (name.as_str(), u, t))
        })
    }

    /// The rights of `user` now; `None` if it does not exist or is
    /// disabled.
    pub fn access(&self, user: &str) -> Option<Access> {
        let u = self.users.get(user).filter(|u| !u.disabled)?;
        let mut grants = Vec::new();
        let mut ops = 0u8;
        let mut admin = false;
        for name in &u.roles {
            let Some(role) = self.role(name) else {
                continue;
            };
            admin |= name == "admin";
            ops |= role.ops;
            grants.extend(role.grants.iter().cloned());
        }
        let mut access = Access::new(user, u.roles.clone(), u.tenant.clone(), admin, grants, ops);
        access.password_generation = u.password_generation;
        Some(access)
    }
}

/// What one connection may do: its user's rights when it logged in (the
/// server recomputes them, and closes connections whose rights changed,
/// when users or roles change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    user: String,
    roles: Vec<String>,
    tenant: Option<String>,
    /// The tenant's namespace, `<tenant>/`.
    namespace: Option<String>,
    admin: bool,
    /// (absolute prefix, right bits), merged per prefix, sorted.
    grants: Vec<(String, u8)>,
    ops: u8,
    /// The API token the connection logged in with, if any: its
    /// revocation ends the session.
    token: Option<String>,
    /// The user's password generation when the session opened.
    password_generation: u64,
}

impl Access {
    fn new(
        user: &str,
        roles: Vec<String>,
        tenant: Option<String>,
        admin: bool,
        grants: Vec<(String, u8)>,
        ops: u8,
    ) -> Access {
        let namespace = tenant.as_ref().map(|t| format!("{t}/"));
        // A tenant's user is never an admin: it would escape the tenant.
        let admin = admin && tenant.is_none();
        let mut merged: BTreeMap<String, u8> = BTreeMap::new();
        for (prefix, bits) in grants {
            let prefix = match &namespace {
                // System streams are outside every tenant.
                Some(_) if prefix.starts_with('$') => continue,
                Some(ns) => format!("{ns}{prefix}"),
                None => prefix,
            };
            *merged.entry(prefix).or_default() |= bits;
        }
        let ops = if tenant.is_some() {
            Op::ALL
                .iter()
                .filter(|(o, _)| o.tenant_may_hold())
                .fold(0, |acc, (o, _)| acc | (ops & *o as u8))
        } else {
            ops
        };
        Access {
            user: user.to_owned(),
            roles,
            tenant,
            namespace,
            admin,
            grants: merged.into_iter().collect(),
            ops,
            token: None,
            password_generation: 0,
        }
    }

    /// The user's password generation the rights were computed with.
    pub fn password_generation(&self) -> u64 {
        self.password_generation
    }

    /// The prefixes of the streams the user may read, absolute, none
    /// covering another, in order (admins: everything, `""`). Names under
    /// them may still be unreadable (system streams under `""`, `$auth`):
    /// check each with [`Access::can`].
    pub fn read_prefixes(&self) -> Vec<String> {
        if self.admin {
            return vec![String::new()];
        }
        minimal_prefixes(
            self.grants
                .iter()
                .filter(|(_, bits)| bits & Right::Read as u8 != 0)
                .map(|(prefix, _)| prefix.clone())
                .collect(),
        )
    }

    /// These rights, for a session opened with the API token `id` (which a
    /// new password does not end: its generation is not the session's).
    pub fn via_token(mut self, id: &str) -> Access {
        self.token = Some(id.to_owned());
        self.password_generation = 0;
        self
    }

    /// The API token the session was opened with.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Everything, for `user` (the admin token, or everyone when
    /// authentication is off).
    pub fn admin(user: &str) -> Access {
        Access::new(
            user,
            vec!["admin".into()],
            None,
            true,
            builtin("admin").map(|r| r.grants).unwrap_or_default(),
            ALL_OPS,
        )
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the user may do everything.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The tenant's namespace (`<tenant>/`), if confined to one.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Whether the user holds `right` on `stream`.
    pub fn can(&self, right: Right, stream: &str) -> bool {
        if self.admin {
            return true;
        }
        if stream == AUTH_STREAM {
            return false;
        }
        let system = stream.starts_with('$');
        self.grants.iter().any(|(prefix, bits)| {
            bits & right as u8 != 0
                && stream.starts_with(prefix.as_str())
                && (!system || prefix.starts_with('$'))
        })
    }

    /// Whether the user may read every event of the log (no filtering).
    pub fn reads_everything(&self) -> bool {
        self.admin
    }

    /// Whether the user holds the store right `op`.
    pub fn has(&self, op: Op) -> bool {
        self.admin || self.ops & op as u8 != 0
    }

    /// The WhoAmI reply.
    pub fn who_am_i(&self) -> WhoAmIOk {
        WhoAmIOk {
            user: self.user.clone(),
            roles: self.roles.clone(),
            tenant: self.tenant.clone(),
            admin: self.admin,
            ops: names_of(if self.admin { ALL_OPS } else { self.ops }, &Op::ALL),
            grants: self
                .grants
                .iter()
                .map(|(prefix, bits)| Grant {
                    prefix: prefix.clone(),
                    rights: names_of(*bits, &Right::ALL),
                })
                .collect(),
        }
    }
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2
/// passes, as OWASP recommends), as a PHC string. Slow on purpose: call it
/// off the async threads.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::PasswordHasher;
    check_password(password)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Refuses passwords that are empty or past [`MAX_PASSWORD_BYTES`].
pub fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("a password has 1 to {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// Whether `password` matches the PHC string `hash` (slow: off the async
/// threads).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::PasswordVerifier;
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    argon2::password_hash::PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A random password generation, never 0 (token sessions' own).
fn random_generation() -> u64 {
    getrandom::u64().unwrap_or(1).max(1)
}

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "lbk_";

/// A new API token: its text (shown once) and what is stored.
pub fn new_token(label: &str, now_us: i64) -> Result<(String, StoredToken), String> {
    let id = random_hex(6)?;
    let secret = random_hex(32)?;
    let text = format!("{TOKEN_PREFIX}{id}_{secret}");
    Ok((
        text,
        StoredToken {
            hash: token_hash(&id, &secret),
            id,
            label: label.to_owned(),
            created_us: now_us,
        },
    ))
}

/// Splits a token's text into id and secret.
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(TOKEN_PREFIX)?.split_once('_')
}

/// The stored hash of a token's secret: BLAKE2b-256 of its id and secret.
/// A fast hash is enough: the secret is 256 random bits, not a password.
pub fn token_hash(id: &str, secret: &str) -> String {
    use blake2::Digest;
    let digest = blake2::Blake2b::<blake2::digest::consts::U32>::new()
        .chain_update(id.as_bytes())
        .chain_update(b":")
        .chain_update(secret.as_bytes())
        .finalize();
    hex(&digest)
}

/// Whether `secret` is the token whose stored hash is `hash`, compared in
/// constant time.
pub fn token_matches(id: &str, secret: &str, hash: &str) -> bool {
    constant_time_eq(token_hash(id, secret).as_bytes(), hash.as_bytes())
}

/// Compares secrets without leaking, through timing, how long a prefix
/// matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `bytes` random bytes, in hex.
pub fn random_hex(bytes: usize) -> Result<String, String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, grants: &[(&str, &[&str])], ops: &[&str]) -> Role {
        Role {
            name: name.into(),
            grants: grants
                .iter()
                .map(|(p, r)| Grant {
                    prefix: (*p).into(),
                    rights: r.iter().map(|s| (*s).into()).collect(),
                })
                .collect(),
            ops: ops.iter().map(|s| (*s).into()).collect(),
            builtin: false,
        }
    }

    #[test]
    fn grants_apply_by_prefix_and_never_reach_system_streams_by_accident() {
        let mut doc = AuthDoc::default();
        doc.put_role(&role(
            "billing",
            &[("invoice-", &["read", "write"]), ("ledger-", &["read"])],
            &["catalog"],
        ))
        .unwrap();
        doc.put_user("bob", None, vec!["billing".into()], None, false)
            .unwrap();
        let a = doc.access("bob").unwrap();
        assert!(a.can(Right::Write, "invoice-7"));
        assert!(a.can(Right::Read, "ledger-1"));
        assert!(!a.can(Right::Write, "ledger-1"));
        assert!(!a.can(Right::Delete, "invoice-7"));
        assert!(!a.can(Right::Read, "account-1"));
        assert!(a.has(Op::Catalog) && !a.has(Op::ReadAll) && !a.has(Op::Stats));
        // A grant on every stream is not one on the server's.
        doc.put_user("rita", None, vec!["reader".into()], None, false)
            .unwrap();
        let r = doc.access("rita").unwrap();
        assert!(r.can(Right::Read, "anything") && !r.can(Right::Write, "anything"));
        assert!(!r.can(Right::Read, "$groups"));
        assert!(!r.can(Right::Read, AUTH_STREAM));
        let admin = Access::admin("root");
        assert!(admin.can(Right::Read, AUTH_STREAM) && admin.has(Op::Users));
        // Even an explicit `$` grant does not open the users stream.
        doc.put_role(&role("sys", &[("$", &["read"])], &[]))
            .unwrap();
        doc.put_user("sam", None, vec!["sys".into()], None, false)
            .unwrap();
        let s = doc.access("sam").unwrap();
        assert!(s.can(Right::Read, "$groups") && !s.can(Right::Read, AUTH_STREAM));
    }

    #[test]
    fn tenants_are_confined_to_their_namespace() {
        let mut doc = AuthDoc::default();
        doc.put_user(
            "acme-admin",
            None,
            vec!["admin".into()],
            Some("acme".into()),
            false,
        )
        .unwrap();
        let a = doc.access("acme-admin").unwrap();
        assert!(!a.is_admin(), "a tenant's admin is no server admin");
        assert!(a.can(Right::Write, "acme/account-1"));
        assert!(a.can(Right::Delete, "acme/x"));
        assert!(!a.can(Right::Read, "globex/account-1"));
        assert!(!a.can(Right::Read, "acme"));
        assert!(!a.can(Right::Read, "$groups"));
        assert!(a.has(Op::ReadAll) && a.has(Op::Catalog));
        for op in [Op::Stats, Op::Scavenge, Op::Users, Op::Groups] {
            assert!(!a.has(op), "{op:?}");
        }
        assert_eq!(a.namespace(), Some("acme/"));
        assert_eq!(a.who_am_i().grants[0].prefix, "acme/");
    }

    #[test]
    fn disabled_or_deleted_users_have_no_access_and_roles_in_use_stay() {
        let mut doc = AuthDoc::default();
        doc.put_role(&role("r", &[("a", &["read"])], &[])).unwrap();
        doc.put_user("u", None, vec!["r".into()], None, false)
            .unwrap();
        assert!(doc.delete_role("r").is_err(), "held by u");
        assert!(doc.delete_role("admin").is_err());
        assert!(doc.put_role(&role("admin", &[], &[])).is_err());
        doc.put_user("u", None, vec!["r".into()], None, true)
            .unwrap();
        assert!(doc.access("u").is_none());
        assert!(doc.delete_user("u"));
        assert!(doc.access("u").is_none());
        assert_eq!(doc.delete_role("r"), Ok(true));
        assert!(
            doc.put_user("v", None, vec!["nope".into()], None, false)
                .is_err()
        );
        assert!(doc.put_user("bad name", None, vec![], None, false).is_err());
        assert!(
            doc.put_user(ADMIN_TOKEN_USER, None, vec![], None, false)
                .is_err()
        );
        assert!(doc.put_role(&role("x", &[("", &["fly"])], &[])).is_err());
        assert!(doc.put_role(&role("x", &[], &["launch"])).is_err());
    }

    #[test]
    fn passwords_and_tokens_verify_and_nothing_else_does() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(hash_password("").is_err());
        let (text, stored) = new_token("ci", 1).unwrap();
        let (id, secret) = parse_token(&text).unwrap();
        assert_eq!(id, stored.id);
        assert!(token_matches(id, secret, &stored.hash));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!token_matches(id, &wrong, &stored.hash));
        assert!(parse_token("sesame").is_none());
        // The stored document keeps the hash, never the text.
        let mut doc = AuthDoc::default();
        doc.put_user("u", Some(h), vec![], None, false).unwrap();
        doc.add_token("u", stored).unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        assert!(!json.contains(secret) && !json.contains("correct horse"));
        assert_eq!(doc.token(id).map(|(u, _, _)| u), Some("u"));
        assert!(doc.revoke_token("u", id));
        assert!(doc.token(id).is_none());
    }
}
