//! Users, roles and API tokens, opcodes 31 to 39 (PROTOCOL.md §5.14).
//!
//! ```text
//! PutUser     { name: str, password?: str, roles: [str], tenant?: str, disabled: bool }
//! PutUserOk = UserInfo                                     creates or replaces; no password
//!                                                          keeps the one stored
//! DeleteUser  { name: str }               DeleteUserOk { }
//! ListUsers   { }                         ListUsersOk  { users: [UserInfo] }
//! PutRole = Role                          PutRoleOk = Role
//! DeleteRole  { name: str }               DeleteRoleOk { }
//! ListRoles   { }                         ListRolesOk  { roles: [Role] }
//! CreateToken { user: str, label: str }   CreateTokenOk { id: str, token: str }
//! RevokeToken { user: str, id: str }      RevokeTokenOk { }
//! WhoAmI      { }                         WhoAmIOk { user: str, roles: [str], tenant?: str,
//!                                                    admin: bool, ops: [str], grants: [Grant] }
//! UserInfo    { name, roles, tenant?, disabled, password: bool, tokens: [TokenInfo] }
//! TokenInfo   { id: str, label: str, created_us: int64 }
//! Role        { name: str, grants: [Grant], ops: [str], builtin: bool }
//! Grant       { prefix: str, rights: [str] }   rights: read, write, delete, metadata
//! ops: read_all, catalog, stats, backup, scavenge, users, groups
//! ```

use serde::{Deserialize, Serialize};

/// Creates or replaces a user. Its `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutUser {
    /// The user's name.
    pub name: String,
    /// A new password; `None` keeps the stored one (a new user without one
    /// logs in only with API tokens).
    #[serde(default)]
    pub password: Option<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The tenant whose namespace (`<tenant>/`) confines the user.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A disabled user cannot log in (its connections are closed).
    #[serde(default)]
    pub disabled: bool,
}

impl std::fmt::Debug for PutUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutUser")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("roles", &self.roles)
            .field("tenant", &self.tenant)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Names a user or a role (`DeleteUser`, `DeleteRole`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameOnly {
    /// The name.
    pub name: String,
}

/// An API token of a user, without its secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's id (part of the token itself).
    pub id: String,
    /// What the token is for.
    #[serde(default)]
    pub label: String,
    /// When it was created, microseconds since the Unix epoch.
    #[serde(default)]
    pub created_us: i64,
}

/// A user as the server shows it (never its password or tokens' secrets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user's name.
    pub name: String,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant, if confined to one.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether logins are refused.
    #[serde(default)]
    pub disabled: bool,
    /// Whether a password is set.
    #[serde(default)]
    pub password: bool,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenInfo>,
}

/// Reply to `ListUsers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListUsersOk {
    /// Every user, by name.
    pub users: Vec<UserInfo>,
}

/// Rights on the streams whose names start with `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Stream name prefix (`""`: every stream except system streams, whose
    /// names start with `$` and need a prefix starting with `$`).
    pub prefix: String,
    /// Some of `read`, `write`, `delete`, `metadata`.
    pub rights: Vec<String>,
}

/// A role: stream rights by prefix and rights on the whole store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Stream rights.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// Store rights: some of `read_all`, `catalog`, `stats`, `backup`,
    /// `scavenge`, `users`, `groups`.
    #[serde(default)]
    pub ops: Vec<String>,
    /// A built-in role (`admin`, `reader`, `writer`, `operator`), which
    /// cannot be changed or deleted. Ignored in `PutRole`.
    #[serde(default)]
    pub builtin: bool,
}

/// Reply to `ListRoles`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRolesOk {
    /// Every role, built-in ones first.
    pub roles: Vec<Role>,
}

/// Creates an API token for a user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// The user.
    pub user: String,
    /// What the token is for.
    #[serde(default)]
    pub label: String,
}

/// Reply to `CreateToken`: the only time the secret is shown. Its `Debug`
/// never shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenOk {
    /// The token's id.
    pub id: String,
    /// The token, to present in `Hello`'s `token` (without `user`).
    pub token: String,
}

impl std::fmt::Debug for CreateTokenOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateTokenOk")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Revokes a user's API token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeToken {
    /// The user.
    pub user: String,
    /// The token's id.
    pub id: String,
}

/// Reply to `WhoAmI`: the connection's identity and rights.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmIOk {
    /// The user (`admin-token` for `--auth-token`, `anonymous` when
    /// authentication is off).
    pub user: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Its tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether it may do everything.
    #[serde(default)]
    pub admin: bool,
    /// Store rights, merged over its roles.
    #[serde(default)]
    pub ops: Vec<String>,
    /// Stream rights, merged over its roles, as absolute prefixes (the
    /// tenant's namespace included).
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Most users a store holds.
pub const MAX_USERS: usize = 10_000;
/// Most roles a store holds.
pub const MAX_ROLES: usize = 1_000;
/// Most grants one role holds.
pub const MAX_GRANTS: usize = 256;
/// Most API tokens one user holds.
pub const MAX_TOKENS_PER_USER: usize = 32;
/// Longest user, role, tenant or token label name, in bytes.
pub const MAX_AUTH_NAME_BYTES: usize = 128;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Checks a user, role or tenant name: 1 to [`MAX_AUTH_NAME_BYTES`] bytes
/// of ASCII letters, digits, `-`, `_`, `.` and `@`.
pub fn validate_auth_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_AUTH_NAME_BYTES {
        return Err(format!(
            "a {what} name has 1 to {MAX_AUTH_NAME_BYTES} bytes; {name:?} has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')))
    {
        return Err(format!(
            "a {what} name has ASCII letters, digits, '-', '_', '.' and '@'; {name:?} has {c:?}"
        ));
    }
    Ok(())
}

/// A size hint for encoding `m`: its MessagePack length, about (a JSON
/// rendering is close enough and never much shorter).
pub(crate) fn size_hint<T: Serialize>(m: &T) -> usize {
    serde_json::to_vec(m).map_or(256, |v| v.len() + 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let put = PutUser {
            name: "u".into(),
            password: Some("hunter2".into()),
            ..PutUser::default()
        };
        let created = CreateTokenOk {
            id: "ab".into(),
            token: "lbk_ab_secret".into(),
        };
        let hello = crate::msg::Hello {
            protocol_version: 1,
            client_name: "c".into(),
            token: Some("hunter2".into()),
            user: Some("u".into()),
        };
        for text in [
            format!("{put:?}"),
            format!("{created:?}"),
            format!("{hello:?}"),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("secret"),
                "{text}"
            );
        }
    }
}
