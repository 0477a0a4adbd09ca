//! One module per command; [`run`] dispatches to them.

mod append;
mod backup;
mod cluster;
mod groups;
mod lifecycle;
mod ping;
mod read;
mod scavenge;
mod stats;
mod streams;
mod tail;
mod users;

use std::path::PathBuf;

use logbook_client::{Client, ClientOptions, TlsOptions};

use crate::args::{Cli, Command};
use crate::failure::Failure;
use crate::output::Out;

/// What every command gets: the connection settings and the output form.
pub(crate) struct Ctx {
    pub(crate) server: String,
    auth_token: Option<String>,
    credentials: Option<(String, String)>,
    tls: Option<TlsArgs>,
    pub(crate) json: bool,
    pub(crate) out: Out,
}

impl Ctx {
    /// Connects to the server. A server that cannot be reached fails at
    /// once (exit code 3): the first connection is attempted once.
    pub(crate) async fn connect(&self) -> Result<Client, Failure> {
        let servers: Vec<&str> = self
            .server
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let first = servers.first().copied().unwrap_or(self.server.as_str());
        let options = self.options(first)?;
        // Several addresses: the nodes of a cluster, tried in order; the
        // client then follows the leader.
        Client::connect_any(servers, options)
            .await
            .map_err(|e| self.failed(e))
    }

    /// The client options the flags describe, for a connection to
    /// `server` (whose host names it for TLS).
    pub(crate) fn options(&self, server: &str) -> Result<ClientOptions, Failure> {
        let mut options = ClientOptions::default()
            .client_name(concat!("logbook-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.auth_token {
            options = options.auth_token(token.clone());
        }
        if let Some((user, password)) = &self.credentials {
            options = options.credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options = options.tls(tls.options(server)?);
        }
        Ok(options)
    }

    /// A failed client call.
    pub(crate) fn failed(&self, e: logbook_client::Error) -> Failure {
        Failure::client(e, &self.server)
    }
}

/// The TLS flags.
pub(crate) struct TlsArgs {
    ca: PathBuf,
    server_name: Option<String>,
    identity: Option<(PathBuf, PathBuf)>,
}

impl TlsArgs {
    /// The client's TLS settings for `server` (`host:port`, whose host
    /// names the server unless --tls-server-name does).
    fn options(&self, server: &str) -> Result<TlsOptions, Failure> {
        let name = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(server),
        };
        let tls = TlsOptions::from_ca_file(&self.ca, name)
            .map_err(|e| Failure::usage(format!("--tls-ca: {e}")))?;
        match &self.identity {
            None => Ok(tls),
            Some((cert, key)) => tls
                .client_identity_files(cert, key)
                .map_err(|e| Failure::usage(format!("--tls-cert/--tls-key: {e}"))),
        }
    }
}

/// The host part of `host:port` (`[v6]:port` gives `v6`).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Runs the command `cli` names.
pub(crate) async fn run(cli: Cli) -> Result<(), Failure> {
    let mut ctx = Ctx {
        server: cli.server,
        auth_token: cli.auth_token,
        credentials: cli.user.zip(cli.password),
        tls: cli.tls_ca.map(|ca| TlsArgs {
            ca,
            server_name: cli.tls_server_name,
            identity: cli.tls_cert.zip(cli.tls_key),
        }),
        json: cli.json,
        out: Out::new(),
    };
    let result = match cli.command {
        Command::Ping => ping::run(&mut ctx).await,
        Command::Append(args) => append::run(&mut ctx, args).await,
        Command::Read(args) => read::stream(&mut ctx, args).await,
        Command::ReadAll(args) => read::all(&mut ctx, args).await,
        Command::Tail(args) => tail::run(&mut ctx, args).await,
        Command::Metadata(args) => lifecycle::metadata(&mut ctx, args).await,
        Command::Truncate(args) => lifecycle::truncate(&mut ctx, args).await,
        Command::Delete(args) => lifecycle::delete(&mut ctx, args).await,
        Command::Scavenge(args) => scavenge::scavenge(&mut ctx, args).await,
        Command::Erase(args) => scavenge::erase(&mut ctx, args).await,
        Command::Stats => stats::run(&mut ctx).await,
        Command::Cluster(args) => cluster::run(&mut ctx, args).await,
        Command::Streams(args) => streams::run(&mut ctx, args).await,
        Command::Backup(args) => backup::run(&mut ctx, args).await,
        Command::Groups => groups::list(&mut ctx).await,
        Command::Group(cmd) => groups::run(&mut ctx, cmd).await,
        Command::Whoami => users::whoami(&mut ctx).await,
        Command::Users => users::list_users(&mut ctx).await,
        Command::User(cmd) => users::user(&mut ctx, cmd).await,
        Command::Roles => users::list_roles(&mut ctx).await,
        Command::Role(cmd) => users::role(&mut ctx, cmd).await,
        Command::Token(cmd) => users::token(&mut ctx, cmd).await,
    };
    // What was printed before a failure still reaches stdout.
    let flushed = ctx.out.flush();
    result.and(flushed)
}
