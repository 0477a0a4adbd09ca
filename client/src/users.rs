//! Users, roles and API tokens ([`Client::put_user`] ... [`Client::who_am_i`]).
//!
//! Managing users and roles needs the `users` store right (the built-in
//! `admin` role holds it); every user may create and revoke its own API
//! tokens and ask who it is.

use logbook_protocol::{
    CreateToken, CreateTokenOk, Grant, NameOnly, PutUser, Request, Response, RevokeToken, Role,
    UserInfo, WhoAmIOk,
};

use crate::client::Client;
use crate::error::Result;

impl Client {
    /// Creates or replaces a user: its roles, tenant and whether it is
    /// disabled; `password` `None` keeps the stored one. Connections of the
    /// user whose rights change are closed (their clients log in again).
    pub async fn put_user(&self, user: PutUser) -> Result<UserInfo> {
        self.call(&Request::PutUser(user), |r| match r {
            Response::PutUserOk(u) => Some(*u),
            _ => None,
        })
        .await
    }

    /// Deletes a user; its connections are closed.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let request = Request::DeleteUser(NameOnly {
            name: name.to_owned(),
        });
        self.call(&request, |r| match r {
            Response::DeleteUserOk => Some(()),
            _ => None,
        })
        .await
    }

    /// Every user (never passwords or token secrets).
    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.call(&Request::ListUsers, |r| match r {
            Response::ListUsersOk(l) => Some(l.users),
            _ => None,
        })
        .await
    }

    /// Creates or replaces a role.
    pub async fn put_role(&self, name: &str, grants: Vec<Grant>, ops: Vec<String>) -> Result<Role> {
        let request = Request::PutRole(Role {
            name: name.to_owned(),
            grants,
            ops,
            builtin: false,
        });
        self.call(&request, |r| match r {
            Response::PutRoleOk(role) => Some(*role),
            _ => None,
        })
        .await
    }

    /// Deletes a role no user holds.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        let request = Request::DeleteRole(NameOnly {
            name: name.to_owned(),
        });
        self.call(&request, |r| match r {
            Response::DeleteRoleOk => Some(()),
            _ => None,
        })
        .await
    }

    /// Every role, built-in ones first.
    pub async fn list_roles(&self) -> Result<Vec<Role>> {
        self.call(&Request::ListRoles, |r| match r {
            Response::ListRolesOk(l) => Some(l.roles),
            _ => None,
        })
        .await
    }

    /// Creates an API token for `user`: the reply holds its text, shown
    /// this once (present it with [`crate::ClientOptions::auth_token`]).
    /// Never retried; only a cluster follower's `NotLeader` (it created
    /// nothing) is followed to the leader.
    pub async fn create_token(&self, user: &str, label: &str) -> Result<CreateTokenOk> {
        let request = Request::CreateToken(CreateToken {
            user: user.to_owned(),
            label: label.to_owned(),
        });
        let mut redirects = 0;
        loop {
            // Not retried: a retry after a lost reply would leave a token
            // nobody holds.
            let r = self
                .call_with(
                    &request,
                    |r| match r {
                        Response::CreateTokenOk(t) => Some(t),
                        _ => None,
                    },
                    self.options().request_timeout,
                    crate::RetryPolicy::none(),
                )
                .await;
            match r {
                Err(e) if redirects < crate::client::MAX_REDIRECTS && self.redirected(&e).await => {
                    redirects += 1;
                }
                r => return r,
            }
        }
    }

    /// Revokes one of `user`'s API tokens; sessions opened with it are
    /// closed.
    pub async fn revoke_token(&self, user: &str, id: &str) -> Result<()> {
        let request = Request::RevokeToken(RevokeToken {
            user: user.to_owned(),
            id: id.to_owned(),
        });
        self.call(&request, |r| match r {
            Response::RevokeTokenOk => Some(()),
            _ => None,
        })
        .await
    }

    /// Who this connection is logged in as, and its rights.
    pub async fn who_am_i(&self) -> Result<WhoAmIOk> {
        self.call(&Request::WhoAmI, |r| match r {
            Response::WhoAmIOk(w) => Some(*w),
            _ => None,
        })
        .await
    }
}
