//! `Hello` (opcode 1): the handshake, and the first request on every
//! connection.
//!
//! ```text
//! Hello   { protocol_version: uint8, client_name: str, token?: str, user?: str }
//! HelloOk { protocol_version: uint8, server_version: str, max_frame_bytes: uint32,
//!           max_append_bytes: uint32, max_event_bytes: uint32,
//!           max_events_per_append: uint32, max_in_flight: uint32, user?: str,
//!           members?: [str], leader?: str }
//! ```
//!
//! This exchange is frozen across protocol versions (see [`crate::frame`]):
//! fields may be added, never removed or retyped.

use serde::{Deserialize, Serialize};

/// Opens a session: says which protocol versions the client speaks and who
/// it is. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the client speaks.
    pub protocol_version: u8,
    /// Free-form client identification for the server's logs, e.g.
    /// `logbook-client/0.1.0`.
    pub client_name: String,
    /// Authentication token, when the server requires one: with `user`,
    /// that user's password; without, an API token or the server's
    /// `--auth-token`.
    pub token: Option<String>,
    /// The user logging in with a password (in `token`).
    pub user: Option<String>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("protocol_version", &self.protocol_version)
            .field("client_name", &self.client_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .finish()
    }
}

/// The server accepts the session and states its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloOk {
    /// Protocol version the session uses from now on: at most the client's.
    pub protocol_version: u8,
    /// Server software version, for diagnostics.
    pub server_version: String,
    /// Largest frame the server accepts or sends, length prefix included.
    pub max_frame_bytes: u32,
    /// Largest total of event bytes (type, metadata and data, summed over
    /// the events) in one append. The encoding around them does not count.
    pub max_append_bytes: u32,
    /// Largest event: its type, metadata and data bytes together; 0 when
    /// the server did not say.
    pub max_event_bytes: u32,
    /// Most events in one append.
    pub max_events_per_append: u32,
    /// Most requests the client may have in flight on this connection; the
    /// server stops reading the socket beyond it.
    pub max_in_flight: u32,
    /// Who the server took the client for (`None` from a server that does
    /// not say).
    pub user: Option<String>,
    /// A cluster node: every member's client address (empty for a single
    /// server).
    pub members: Vec<String>,
    /// A cluster node: the leader's client address, if known then.
    pub leader: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct HelloWire<'a> {
    protocol_version: u8,
    client_name: &'a str,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

impl Hello {
    pub(crate) fn to_wire(&self) -> HelloWire<'_> {
        HelloWire {
            protocol_version: self.protocol_version,
            client_name: &self.client_name,
            token: self.token.as_deref(),
            user: self.user.as_deref(),
        }
    }

    pub(crate) fn from_wire(w: HelloWire<'_>) -> Hello {
        Hello {
            protocol_version: w.protocol_version,
            client_name: w.client_name.to_owned(),
            token: w.token.map(str::to_owned),
            user: w.user.map(str::to_owned),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct HelloOkWire<'a> {
    protocol_version: u8,
    server_version: &'a str,
    max_frame_bytes: u32,
    max_append_bytes: u32,
    /// Added to the frozen exchange later: a server that does not send it
    /// announces no per-event limit (0).
    #[serde(default)]
    max_event_bytes: u32,
    max_events_per_append: u32,
    max_in_flight: u32,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(default, borrow, skip_serializing_if = "Vec::is_empty")]
    members: Vec<&'a str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    leader: Option<&'a str>,
}

impl HelloOk {
    pub(crate) fn to_wire(&self) -> HelloOkWire<'_> {
        HelloOkWire {
            protocol_version: self.protocol_version,
            server_version: &self.server_version,
            max_frame_bytes: self.max_frame_bytes,
            max_append_bytes: self.max_append_bytes,
            max_event_bytes: self.max_event_bytes,
            max_events_per_append: self.max_events_per_append,
            max_in_flight: self.max_in_flight,
            user: self.user.as_deref(),
            members: self.members.iter().map(String::as_str).collect(),
            leader: self.leader.as_deref(),
        }
    }

    pub(crate) fn from_wire(w: HelloOkWire<'_>) -> HelloOk {
        HelloOk {
            protocol_version: w.protocol_version,
            server_version: w.server_version.to_owned(),
            max_frame_bytes: w.max_frame_bytes,
            max_append_bytes: w.max_append_bytes,
            max_event_bytes: w.max_event_bytes,
            max_events_per_append: w.max_events_per_append,
            max_in_flight: w.max_in_flight,
            user: w.user.map(str::to_owned),
            members: w.members.into_iter().map(str::to_owned).collect(),
            leader: w.leader.map(str::to_owned),
        }
    }
}
