//! `Hello` (the handshake: protocol version and credentials, the first
//! request of every connection) and `Ping`.

use logbook_protocol::{
    ErrorCode, ErrorReply, HelloOk, Opcode, PROTOCOL_VERSION, Ping, Pong, Request, Response,
};

use crate::net::audit::Attempt;
use crate::net::connection::{Close, Connection};
use crate::net::limits;

impl Connection {
    /// Answers the connection's first request, which must be a `Hello`
    /// with a supported version and, if the server wants one, its token.
    /// `Err` closes the connection.
    pub(in crate::net) async fn handshake(
        &mut self,
        corr_id: u32,
        req: Request,
    ) -> Result<(), Close> {
        let Request::Hello(hello) = req else {
            let reply = ErrorReply::new(ErrorCode::BadRequest, "the first request must be Hello");
            // A Credit has no reply, so what is wrong with it is said on
            // the connection (PROTOCOL.md §2.3).
            if let Request::Credit(_) = req {
                return Err(self.connection_error(reply));
            }
            self.send_error(req.opcode(), corr_id, reply);
            return Err(Close::Violation("request before Hello".into()));
        };
        if hello.protocol_version < PROTOCOL_VERSION {
            self.send_error(
                Opcode::Hello,
                corr_id,
                ErrorReply::new(
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.protocol_version),
                )
                .with_max_version(PROTOCOL_VERSION),
            );
            return Err(Close::Violation("unsupported version".into()));
        }
        let audit = &self.shared.audit;
        let ip = self.peer.ip();
        let auth = &self.shared.auth;
        if auth.required() {
            let who = serde_json::json!({ "client": hello.client_name, "user": hello.user });
            // An address with too many recent failures is refused, right
            // credentials or not, so guessing is slowed to a few tries a
            // minute; at most as many of its password logins are checked
            // at once as it has failures left (the others wait their turn,
            // up to the handshake timeout), so parallel guesses cannot pass
            // the limit either. A Hello without credentials guesses
            // nothing and is not counted (its address may be shared with
            // good clients).
            let counted = hello.token.is_some();
            // A password (or the --auth-token, chosen by people) can be
            // guessed; an API token's 256 random bits cannot.
            let guessable = hello.user.is_some()
                || hello
                    .token
                    .as_deref()
                    .is_some_and(|t| crate::auth::parse_token(t).is_none());
            let deadline = tokio::time::Instant::now() + self.shared.config.handshake_timeout;
            let attempt = match (counted, guessable) {
                (false, _) => Attempt::Go,
                // Waits its turn behind the address's other checks.
                (true, true) => audit.wait_for_attempt(ip, deadline).await,
                (true, false) => audit.begin_attempt(ip, false),
            };
            if attempt != Attempt::Go {
                let (code, message) = if attempt == Attempt::Blocked {
                    (
                        ErrorCode::NotAuthenticated,
                        "too many failed logins from this address: try again later",
                    )
                } else {
                    (
                        ErrorCode::ServerBusy,
                        "too many logins from this address at once: try again",
                    )
                };
                audit.record("login_refused", self.peer, who);
                self.send_error(Opcode::Hello, corr_id, ErrorReply::new(code, message));
                return Err(Close::Violation("login refused".into()));
            }
            // A login waits its turn for a password check at most until
            // the handshake deadline: a flood of logins is answered busy
            // rather than queued for ever.
            let login = auth.login(hello.user.as_deref(), hello.token.as_deref());
            match tokio::time::timeout_at(deadline, login).await {
                Err(_) => {
                    if counted {
                        audit.end_attempt(ip, guessable, false);
                    }
                    self.send_error(
                        Opcode::Hello,
                        corr_id,
                        ErrorReply::new(
                            ErrorCode::ServerBusy,
                            "too many logins at once: try again later",
                        ),
                    );
                    return Err(Close::Violation("login not checked in time".into()));
                }
                Ok(Ok(access)) => {
                    if counted {
                        audit.end_attempt(ip, guessable, false);
                    }
                    audit.record(
                        "login",
                        self.peer,
                        serde_json::json!({ "client": hello.client_name, "user": access.user() }),
                    );
                    self.access = access;
                }
                Ok(Err(why)) => {
                    let blocked = counted && audit.end_attempt(ip, guessable, true);
                    audit.record(
                        "login_failed",
                        self.peer,
                        serde_json::json!({
                            "client": hello.client_name,
                            "user": hello.user,
                            "reason": why,
                            "blocked": blocked,
                        }),
                    );
                    self.send_error(
                        Opcode::Hello,
                        corr_id,
                        ErrorReply::new(
                            ErrorCode::NotAuthenticated,
                            "missing or wrong credentials",
                        ),
                    );
                    return Err(Close::Violation("not authenticated".into()));
                }
            }
        } else {
            self.access = crate::auth::Access::admin(crate::auth::ANONYMOUS_USER);
        }
        self.handshaken = true;
        tracing::debug!(peer = %self.peer, client = %hello.client_name, "client said hello");
        let c = &self.shared.config;
        let store = self.shared.store.config();
        let (members, leader) = match &c.cluster {
            Some(node) => (
                node.client_addresses(),
                node.status().leader_member().map(|m| m.client.clone()),
            ),
            None => (Vec::new(), None),
        };
        self.send(
            corr_id,
            Opcode::Hello,
            &Response::HelloOk(HelloOk {
                protocol_version: PROTOCOL_VERSION,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                max_frame_bytes: c.max_frame_bytes,
                max_append_bytes: limits::max_append_bytes(store).min(u64::from(u32::MAX)) as u32,
                max_event_bytes: store.max_event_bytes.min(u64::from(u32::MAX)) as u32,
                max_events_per_append: store.max_batch_events,
                max_in_flight: c.max_in_flight,
                user: Some(self.access.user().to_owned()),
                members,
                leader,
            }),
        );
        Ok(())
    }

    /// Answers a ping with its nonce.
    pub(in crate::net) fn ping(&self, corr_id: u32, p: Ping) {
        let opcode = Opcode::Ping;
        self.send(corr_id, opcode, &Response::Pong(Pong { nonce: p.nonce }))
    }
}
