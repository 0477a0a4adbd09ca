//! Authentication at run time: the users and roles document kept in the
//! log, logins, and changes (the model is [`crate::auth`]).
//!
//! The document lives in the stream `$auth` (max count 1: a scavenge
//! removes older documents, and with them old password hashes), so it
//! survives restarts, travels in backups, and will be replicated with the
//! log. Every change writes a whole new document with the expected version
//! of the last one, one change at a time; then the in-memory copy is
//! swapped and a generation counter bumped, which every connection watches:
//! a connection whose user's rights changed is closed (its client
//! reconnects and logs in again), so a revocation takes effect at once,
//! subscriptions included.
//!
//! Who must log in: nobody while the store has no user and the server no
//! `--auth-token` (every connection is `anonymous`, an admin); such a
//! server listening beyond loopback creates an `admin` user at its first
//! start and writes its password to `<data-dir>/initial-admin-password`
//! (mode 0600), so that no network ever reaches an open store. Once a user
//! exists, every connection logs in: a user and password, an API token, or
//! `--auth-token`.
//!
//! Password checks (argon2id, ~19 MiB and tens of milliseconds each) run
//! on blocking threads, at most [`MAX_VERIFYING`] at once: a flood of
//! logins costs bounded memory and never stalls the network threads.

use std::sync::Arc;

use logbook_protocol::lifecycle::StreamMetadata;
use logbook_protocol::{
    Direction, ErrorCode, ErrorReply, EventId, ExpectedVersion, NewEvent, StreamName, StreamVersion,
};
use logbook_storage::Store;
use parking_lot::RwLock;
use tokio::sync::{Semaphore, watch};

use crate::auth::{
    ADMIN_TOKEN_USER, ANONYMOUS_USER, AUTH_STREAM, Access, AuthDoc, constant_time_eq, parse_token,
    token_matches, verify_password,
};
use crate::net::writes::SystemLog;

/// Password checks running at once.
pub(crate) const MAX_VERIFYING: usize = 4;

/// A refused login: why, for the audit log (the client only hears
/// "missing or wrong credentials").
pub(crate) type LoginRefused = &'static str;

/// Why a Hello without credentials is refused.
pub(crate) const NO_CREDENTIALS: LoginRefused = "no credentials";

/// The users and roles, and logins.
pub(crate) struct Auth {
    /// Where the document is written: the engine, or the cluster's log.
    log: SystemLog,
    admin_token: Option<String>,
    /// Whether the server listens on loopback only, so that a store
    /// without users may admit everyone (decided at start: deleting the
    /// last user of a server reachable from the network never opens it).
    open_allowed: bool,
    doc: RwLock<Arc<AuthDoc>>,
    /// Version of `$auth`'s last event (what the next change expects).
    version: tokio::sync::Mutex<Option<StreamVersion>>,
    generation: watch::Sender<u64>,
    verifying: Arc<Semaphore>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("required", &self.required())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Reads the document from the store; `open_allowed`: the server
    /// listens on loopback only.
    pub(crate) fn load(
        log: SystemLog,
        admin_token: Option<String>,
        open_allowed: bool,
    ) -> Result<Auth, String> {
        let (doc, version) = read_doc(log.store())?;
        Ok(Auth {
            log,
            admin_token,
            open_allowed,
            doc: RwLock::new(Arc::new(doc)),
            version: tokio::sync::Mutex::new(version),
            generation: watch::channel(0).0,
            verifying: Arc::new(Semaphore::new(MAX_VERIFYING)),
        })
    }

    /// Whether connections must log in.
    pub(crate) fn required(&self) -> bool {
        self.admin_token.is_some() || !self.open_allowed || self.doc.read().has_users()
    }

    /// The document now.
    pub(crate) fn doc(&self) -> Arc<AuthDoc> {
        Arc::clone(&self.doc.read())
    }

    /// Fires when users or roles change.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The rights now of a session opened with `old`; `None` if it may no
    /// longer be served (its user deleted or disabled, its API token
    /// revoked, or users created since it came in anonymously).
    pub(crate) fn current(&self, old: &Access) -> Option<Access> {
        match old.user() {
            ADMIN_TOKEN_USER => Some(Access::admin(ADMIN_TOKEN_USER)),
            ANONYMOUS_USER => (!self.required()).then(|| Access::admin(ANONYMOUS_USER)),
            user => {
                let doc = self.doc.read();
                let now = doc.access(user)?;
                match old.token() {
                    // A new password ends the sessions the old one opened.
                    None => (now.password_generation() == old.password_generation()).then_some(now),
                    Some(id) => doc
                        .token(id)
                        .filter(|(holder, _, _)| *holder == user)
                        .map(|_| now.via_token(id)),
                }
            }
        }
    }

    /// Checks a Hello's credentials.
    pub(crate) async fn login(
        &self,
        user: Option<&str>,
        token: Option<&str>,
    ) -> Result<Access, LoginRefused> {
        if !self.required() {
            return Ok(Access::admin(ANONYMOUS_USER));
        }
        let Some(secret) = token else {
            return Err(NO_CREDENTIALS);
        };
        match user {
            Some(user) => self.login_password(user, secret).await,
            None => {
                if let Some(admin) = &self.admin_token
                    && constant_time_eq(secret.as_bytes(), admin.as_bytes())
                {
                    return Ok(Access::admin(ADMIN_TOKEN_USER));
                }
                let (id, key) = parse_token(secret).ok_or("wrong token")?;
                let doc = self.doc();
                let (name, _, stored) = doc.token(id).ok_or("unknown token")?;
                if !token_matches(id, key, &stored.hash) {
                    return Err("wrong token");
                }
                doc.access(name)
                    .map(|a| a.via_token(id))
                    .ok_or("user disabled")
            }
        }
    }

    async fn login_password(&self, user: &str, password: &str) -> Result<Access, LoginRefused> {
        let doc = self.doc();
        // A missing user costs a hash check too, so that timing does not
        // tell which names exist.
        let stored = doc.users.get(user).and_then(|u| u.password.clone());
        let exists = stored.is_some();
        let password = password.to_owned();
        let ok = self
            .off_thread(move || verify_password(&password, &stored.unwrap_or_else(dummy_hash)))
            .await
            .unwrap_or(false);
        if !ok || !exists {
            return Err("wrong user or password");
        }
        // The rights of the document the password was checked against: if
        // it changed meanwhile (a new password, say), the session sees the
        // change at once and is judged by it.
        doc.access(user).ok_or("user disabled")
    }

    /// Runs a password hash or check on a blocking thread, in its turn
    /// among at most [`MAX_VERIFYING`]; `None` if it could not run. The
    /// slot goes with the work: one whose caller gave up (its handshake
    /// timed out) still holds it until its hash is done, so at most
    /// MAX_VERIFYING run at once, whatever happens to their callers.
    async fn off_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let slot = Arc::clone(&self.verifying).acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .ok()
    }

    /// Makes `doc` (stored at `stored`) the current document and tells
    /// the connections.
    fn publish(
        &self,
        version: &mut Option<StreamVersion>,
        doc: AuthDoc,
        stored: Option<StreamVersion>,
    ) {
        *version = stored;
        *self.doc.write() = Arc::new(doc);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Reads the document again if the store holds another than the one
    /// published (a cluster node applied a change another node made).
    fn refresh(&self, version: &mut Option<StreamVersion>) -> Result<(), String> {
        let stored = self
            .log
            .store()
            .stream_version(AUTH_STREAM)
            .map_err(|e| format!("reading {AUTH_STREAM}: {e}"))?;
        if stored != *version {
            let (doc, stored) = read_doc(self.log.store())?;
            self.publish(version, doc, stored);
        }
        Ok(())
    }

    /// On a cluster node: follows the changes other nodes make (and those
    /// a snapshot brings), publishing each document once this node's store
    /// holds it, until `stop`.
    pub(crate) async fn follow(&self, mut stop: watch::Receiver<bool>) {
        let Some(node) = self.log.cluster() else {
            return;
        };
        let mut written = node.system_writes();
        loop {
            // Whatever was written before the watch was taken is looked at
            // on the first turn.
            if let Err(e) = self.refresh(&mut *self.version.lock().await) {
                tracing::error!(error = %e, "the users document could not be read again");
            }
            tokio::select! {
                r = written.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    /// Applies `change` to a copy of the document, writes it, and makes it
    /// current. Changes run one at a time. On a cluster the leader writes
    /// through the replicated log (a follower's change is refused with
    /// `NotLeader`), and a change another node made first is taken and
    /// `change` applied again to it.
    pub(crate) async fn change<T>(
        &self,
        actor: Option<&Access>,
        mut change: impl FnMut(&mut AuthDoc) -> Result<T, Box<ErrorReply>>,
    ) -> Result<T, Box<ErrorReply>> {
        let mut version = self.version.lock().await;
        let mut tries = 0;
        loop {
            tries += 1;
            // On a cluster this node may have applied a change made by an
            // earlier leader and not published it yet.
            if self.log.cluster().is_some() {
                self.refresh(&mut version).map_err(internal)?;
            }
            // The actor's rights were checked before this change's turn
            // came: a change made meanwhile (its password, its roles) must
            // not let a request authorized under the old rights through.
            if let Some(actor) = actor
                && self.current(actor).as_ref() != Some(actor)
            {
                return Err(Box::new(ErrorReply::new(
                    ErrorCode::NotAuthenticated,
                    "the session's rights changed: log in again",
                )));
            }
            let mut doc = AuthDoc::clone(&self.doc());
            let out = change(&mut doc)?;
            self.keeps_an_admin(&doc)?;
            match self.write(&version, &doc).await {
                Ok(stored) => {
                    self.publish(&mut version, doc, Some(stored));
                    return Ok(out);
                }
                Err(e) => {
                    // The write may have happened all the same (an error
                    // after the commit, an outcome unknown): take the
                    // stored document as it is, so that the next change
                    // expects the right version.
                    if let Err(e) = self.refresh(&mut version) {
                        tracing::error!(error = %e, "the users document could not be read again");
                    }
                    // Another node's change came first: apply this one to
                    // it (a few times at most: changes are rare).
                    if e.code == ErrorCode::WrongExpectedVersion && tries < 3 {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Refuses a document nobody could administer the server with: it
    /// needs an enabled admin user, or the --auth-token. (On loopback,
    /// deleting every user turns authentication off again, as it was
    /// before the first.)
    fn keeps_an_admin(&self, doc: &AuthDoc) -> Result<(), Box<ErrorReply>> {
        let refuse = |why: &str| Box::new(ErrorReply::new(ErrorCode::BadRequest, why.to_owned()));
        if self.admin_token.is_none() && !doc.has_admin() {
            if doc.has_users() {
                return Err(refuse(
                    "the change would leave no enabled admin user: grant admin to another user first",
                ));
            }
            if !self.open_allowed {
                return Err(refuse(
                    "the change would leave no user on a server reachable beyond loopback",
                ));
            }
        }
        Ok(())
    }

    /// Writes `doc` as the next document after the one at `version`, and
    /// returns the version it is stored at.
    async fn write(
        &self,
        version: &Option<StreamVersion>,
        doc: &AuthDoc,
    ) -> Result<StreamVersion, Box<ErrorReply>> {
        let json = serde_json::to_vec(doc).map_err(|e| internal(e.to_string()))?;
        // Checked here too: a cluster's log reports the engine's refusal as
        // a bad request.
        let max = self.log.store().config().max_event_bytes as usize;
        if json.len() > max {
            return Err(Box::new(
                ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the users and roles would not fit in one event: {} bytes, at most {max}",
                        json.len()
                    ),
                )
                .with_limit(max as u64),
            ));
        }
        let stream = StreamName::new(AUTH_STREAM).map_err(|e| internal(e.to_string()))?;
        if version.is_none() {
            // The stream keeps its last document only.
            self.log
                .set_metadata(
                    &stream,
                    ExpectedVersion::Any,
                    StreamMetadata {
                        max_count: Some(1),
                        ..StreamMetadata::default()
                    },
                )
                .await?;
        }
        let expected = match *version {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        };
        let event = NewEvent::new(EventId::new_v7(), "$auth", json);
        match self.log.append(&stream, expected, vec![event]).await {
            Ok(w) => Ok(w.last_version),
            Err(e) if e.code == ErrorCode::TooLarge => Err(Box::new(ErrorReply::new(
                ErrorCode::TooLarge,
                format!(
                    "the users and roles would not fit in one event: {}",
                    e.message
                ),
            ))),
            Err(e) => Err(e),
        }
    }

    /// Hashes a password off the async threads.
    pub(crate) async fn hash(&self, password: String) -> Result<String, Box<ErrorReply>> {
        self.off_thread(move || crate::auth::hash_password(&password))
            .await
            .ok_or_else(|| internal("the password could not be hashed".into()))?
            .map_err(|e| Box::new(ErrorReply::new(ErrorCode::BadRequest, e)))
    }

    /// At the first start of a store with no users on a server without
    /// `--auth-token` that listens beyond loopback: creates `admin` with a
    /// random password, written to `path` (mode 0600). Returns whether it
    /// did.
    pub(crate) async fn bootstrap(&self, path: &std::path::Path) -> Result<bool, String> {
        if self.admin_token.is_some() || self.doc.read().has_users() {
            return Ok(false);
        }
        let password = crate::auth::random_hex(18)?;
        write_secret(path, &format!("{password}\n"))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let hash = self.hash(password).await.map_err(|e| e.message.clone())?;
        self.change(None, |doc| {
            doc.put_user(
                "admin",
                Some(hash.clone()),
                vec!["admin".into()],
                None,
                false,
            )
            .map_err(|e| Box::new(ErrorReply::new(ErrorCode::BadRequest, e)))
        })
        .await
        .map_err(|e| e.message.clone())?;
        Ok(true)
    }
}

/// The stored document and the version of the event holding it.
fn read_doc(store: &Store) -> Result<(AuthDoc, Option<StreamVersion>), String> {
    let slice = store
        .read_stream(AUTH_STREAM, None, Direction::Backward, 1)
        .map_err(|e| format!("reading {AUTH_STREAM}: {e}"))?;
    match slice.events.first() {
        None => Ok((AuthDoc::default(), None)),
        Some(e) => Ok((
            serde_json::from_slice(&e.data).map_err(|x| {
                format!(
                    "{AUTH_STREAM} at version {}: {x} (the users document is damaged; restore the store from a backup)",
                    e.version.0
                )
            })?,
            Some(e.version),
        )),
    }
}

/// Writes a file only its owner can read.
fn write_secret(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A new file, never one that is there already (it could be readable
    // by others, or a link to elsewhere).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn internal(message: String) -> Box<ErrorReply> {
    Box::new(ErrorReply::new(ErrorCode::Internal, message))
}

/// An argon2id hash of a password nobody knows (made once), checked when a
/// login names a user that does not exist or has no password.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let password = crate::auth::random_hex(16).unwrap_or_else(|_| "0".repeat(32));
            crate::auth::hash_password(&password).unwrap_or_default()
        })
        .clone()
}
