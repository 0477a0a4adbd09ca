//! `logbook whoami`, `logbook users`, `logbook user put|passwd|delete`,
//! `logbook roles`, `logbook role put|delete`, `logbook token
//! create|revoke`: users, roles and API tokens (PROTOCOL.md §5.14).

use logbook_client::{Grant, PutUser, Role, UserInfo};
use serde_json::json;

use super::Ctx;
use crate::args::{RoleCommand, TokenCommand, UserCommand};
use crate::failure::Failure;
use crate::output::{Align, Table};

/// The first line of stdin, without its line end.
fn password_from_stdin() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("reading the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Failure::usage("no password on stdin"));
    }
    Ok(password)
}

/// `PREFIX=RIGHT,RIGHT` as a grant.
fn parse_grant(text: &str) -> Result<Grant, Failure> {
    let (prefix, rights) = text
        .rsplit_once('=')
        .ok_or_else(|| Failure::usage(format!("--grant {text:?}: expected PREFIX=RIGHTS")))?;
    Ok(Grant {
        prefix: prefix.to_owned(),
        rights: rights
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

fn grants_text(grants: &[Grant]) -> String {
    grants
        .iter()
        .map(|g| format!("{}*={}", g.prefix, g.rights.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `logbook whoami`.
pub(crate) async fn whoami(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let me = client.who_am_i().await.map_err(|e| ctx.failed(e))?;
    if ctx.json {
        return ctx.out.json(&me);
    }
    let mut text = format!("user {}", me.user);
    if let Some(t) = &me.tenant {
        text.push_str(&format!(" (tenant {t})"));
    }
    text.push_str(&format!("\nroles: {}\n", me.roles.join(", ")));
    if me.admin {
        text.push_str("admin: may do everything\n");
    } else {
        text.push_str(&format!("store rights: {}\n", me.ops.join(", ")));
        text.push_str(&format!("stream rights: {}\n", grants_text(&me.grants)));
    }
    ctx.out.text(&text)
}

/// `logbook users`.
pub(crate) async fn list_users(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let users = client.list_users().await.map_err(|e| ctx.failed(e))?;
    if ctx.json {
        for u in &users {
            ctx.out.json(u)?;
        }
        return Ok(());
    }
    let mut table = Table::new(
        &[
            ("USER", Align::Left, 0),
            ("ROLES", Align::Left, 0),
            ("TENANT", Align::Left, 0),
            ("STATE", Align::Left, 0),
            ("PASSWORD", Align::Left, 0),
            ("TOKENS", Align::Left, 0),
        ],
        false,
    );
    for u in &users {
        let tokens = u
            .tokens
            .iter()
            .map(|t| match t.label.as_str() {
                "" => t.id.clone(),
                label => format!("{} ({label})", t.id),
            })
            .collect::<Vec<_>>()
            .join(", ");
        table.push(
            vec![
                u.name.clone(),
                u.roles.join(","),
                u.tenant.clone().unwrap_or_else(|| "-".into()),
                if u.disabled { "disabled" } else { "enabled" }.into(),
                if u.password { "set" } else { "-" }.into(),
                if tokens.is_empty() {
                    "-".into()
                } else {
                    tokens
                },
            ],
            &mut ctx.out,
        )?;
    }
    table.print(&mut ctx.out)?;
    if users.is_empty() {
        ctx.out
            .text("no users (authentication is off on loopback)\n")?;
    }
    Ok(())
}

fn print_user(ctx: &mut Ctx, u: &UserInfo) -> Result<(), Failure> {
    if ctx.json {
        return ctx.out.json(u);
    }
    ctx.out.text(&format!(
        "user {}: roles {}, {}{}\n",
        u.name,
        if u.roles.is_empty() {
            "none".into()
        } else {
            u.roles.join(",")
        },
        if u.disabled { "disabled" } else { "enabled" },
        u.tenant
            .as_ref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    ))
}

/// `logbook user ...`.
pub(crate) async fn user(ctx: &mut Ctx, cmd: UserCommand) -> Result<(), Failure> {
    match cmd {
        UserCommand::Put(args) => {
            let password = if args.password_stdin {
                Some(password_from_stdin()?)
            } else {
                None
            };
            let client = ctx.connect().await?;
            let u = client
                .put_user(PutUser {
                    name: args.name,
                    password,
                    roles: args.roles,
                    tenant: args.tenant,
                    disabled: args.disabled,
                })
                .await
                .map_err(|e| ctx.failed(e))?;
            print_user(ctx, &u)
        }
        UserCommand::Passwd(args) => {
            let password = password_from_stdin()?;
            let client = ctx.connect().await?;
            let users = client.list_users().await.map_err(|e| ctx.failed(e))?;
            let Some(old) = users.into_iter().find(|u| u.name == args.name) else {
                return Err(Failure::usage(format!("no user named {:?}", args.name)));
            };
            let u = client
                .put_user(PutUser {
                    name: old.name,
                    password: Some(password),
                    roles: old.roles,
                    tenant: old.tenant,
                    disabled: old.disabled,
                })
                .await
                .map_err(|e| ctx.failed(e))?;
            print_user(ctx, &u)
        }
        UserCommand::Delete(args) => {
            let client = ctx.connect().await?;
            client
                .delete_user(&args.name)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out.json(&json!({ "deleted": args.name }))
            } else {
                ctx.out.text(&format!("deleted user {}\n", args.name))
            }
        }
    }
}

fn print_role(ctx: &mut Ctx, r: &Role) -> Result<(), Failure> {
    if ctx.json {
        return ctx.out.json(r);
    }
    ctx.out.text(&format!(
        "role {}: {} | {}\n",
        r.name,
        grants_text(&r.grants),
        r.ops.join(",")
    ))
}

/// `logbook roles`.
pub(crate) async fn list_roles(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let roles = client.list_roles().await.map_err(|e| ctx.failed(e))?;
    if ctx.json {
        for r in &roles {
            ctx.out.json(r)?;
        }
        return Ok(());
    }
    let mut table = Table::new(
        &[
            ("ROLE", Align::Left, 0),
            ("GRANTS", Align::Left, 0),
            ("STORE RIGHTS", Align::Left, 0),
            ("", Align::Left, 0),
        ],
        false,
    );
    for r in &roles {
        table.push(
            vec![
                r.name.clone(),
                grants_text(&r.grants),
                r.ops.join(","),
                if r.builtin { "built-in" } else { "" }.into(),
            ],
            &mut ctx.out,
        )?;
    }
    table.print(&mut ctx.out)
}

/// `logbook role ...`.
pub(crate) async fn role(ctx: &mut Ctx, cmd: RoleCommand) -> Result<(), Failure> {
    match cmd {
        RoleCommand::Put(args) => {
            let grants = args
                .grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<Vec<_>, _>>()?;
            let client = ctx.connect().await?;
            let r = client
                .put_role(&args.name, grants, args.ops)
                .await
                .map_err(|e| ctx.failed(e))?;
            print_role(ctx, &r)
        }
        RoleCommand::Delete(args) => {
            let client = ctx.connect().await?;
            client
                .delete_role(&args.name)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out.json(&json!({ "deleted": args.name }))
            } else {
                ctx.out.text(&format!("deleted role {}\n", args.name))
            }
        }
    }
}

/// `logbook token ...`.
pub(crate) async fn token(ctx: &mut Ctx, cmd: TokenCommand) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    match cmd {
        TokenCommand::Create(args) => {
            let t = client
                .create_token(&args.owner, &args.label)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "user": args.owner, "id": t.id, "token": t.token }))
            } else {
                // The token alone on the last line, for scripts; it is
                // shown this once.
                ctx.out.text(&format!(
                    "token {} for {} (shown this once):\n{}\n",
                    t.id, args.owner, t.token
                ))
            }
        }
        TokenCommand::Revoke(args) => {
            client
                .revoke_token(&args.owner, &args.id)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "revoked": args.id, "user": args.owner }))
            } else {
                ctx.out
                    .text(&format!("revoked token {} of {}\n", args.id, args.owner))
            }
        }
    }
}
