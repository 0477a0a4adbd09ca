//! `BackupBegin`, `BackupRead` and `BackupEnd`: a backup session pins an
//! image of the store (its files stay while the session lasts) and the
//! client reads the files piece by piece. Sessions are limited per
//! connection and per server, since each pins files.

use std::sync::Arc;

use bytes::Bytes;
use logbook_protocol::{
    BackupBeginOk, BackupEnd, BackupFile, BackupRead, ErrorCode, ErrorReply, LogPosition, Opcode,
    Response,
};

use crate::net::connection::Connection;
use crate::net::errors::storage_error;

/// Backup sessions one connection may hold at once (each pins files).
const MAX_BACKUPS_PER_CONNECTION: usize = 4;
/// Backup sessions the server holds at once.
pub(in crate::net) const MAX_BACKUPS: usize = 16;

impl Connection {
    /// Pins a backup image for this connection. The snapshot may wait for
    /// an index flush and stats files: off the runtime's threads.
    pub(in crate::net) async fn backup_begin(&mut self, corr_id: u32) {
        let opcode = Opcode::BackupBegin;
        self.audit("backup", serde_json::json!({}));
        if self.backups.len() >= MAX_BACKUPS_PER_CONNECTION {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "at most {MAX_BACKUPS_PER_CONNECTION} backup sessions per connection; end one first"
                    ),
                ),
            );
            return;
        }
        let Ok(slot) = Arc::clone(&self.shared.backup_slots).try_acquire_owned() else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    format!("the server holds {MAX_BACKUPS} backup sessions; try again later"),
                ),
            );
            return;
        };
        let store = self.shared.store.clone();
        let image = match tokio::task::spawn_blocking(move || store.backup_image()).await {
            Ok(Ok(image)) => Arc::new(image),
            Ok(Err(e)) => {
                self.send_error(opcode, corr_id, storage_error(&e));
                return;
            }
            Err(e) => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::Internal, e.to_string()),
                );
                return;
            }
        };
        self.next_backup = self.next_backup.wrapping_add(1);
        let id = self.next_backup;
        let reply = BackupBeginOk {
            backup: id,
            position: LogPosition(image.position),
            files: image
                .files
                .iter()
                .map(|f| BackupFile {
                    name: f.name.clone(),
                    len: f.len,
                })
                .collect(),
            manifest: Bytes::from(image.manifest.clone()),
            max_read: self.shared.max_backup_read(),
        };
        tracing::info!(peer = %self.peer, position = image.position, bytes = image.total_bytes(), "backup started");
        self.backups.insert(id, (image, slot));
        self.send(corr_id, opcode, &Response::BackupBeginOk(reply));
    }

    /// Reads part of a pinned image's file (a blocking `pread`, in the
    /// reader pool: backups read cold segments), within outbox room.
    pub(in crate::net) async fn backup_read(&mut self, corr_id: u32, r: BackupRead) {
        let opcode = Opcode::BackupRead;
        let Some(image) = self.backups.get(&r.backup).map(|(i, _)| Arc::clone(i)) else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("no backup session {} on this connection", r.backup),
                ),
            );
            return;
        };
        if image.files.get(r.file as usize).is_none() {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("backup session {} has no file {}", r.backup, r.file),
                ),
            );
            return;
        }
        let want = self.shared.max_backup_read().min(r.len) as usize;
        // Room for the chunk before reading it (the reply is that big).
        let Some(room) = self.reply_room(want + 1024).await else {
            return;
        };
        let max = want.min(room.bytes().saturating_sub(1024).max(1));
        let file = r.file as usize;
        let read = self
            .shared
            .reads
            .run(move || image.files.get(file).map(|f| f.read(r.offset, max)))
            .await;
        match read {
            Some(Ok(data)) => self.send(corr_id, opcode, &Response::BackupReadOk(data)),
            Some(Err(e)) => self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::Internal, format!("reading backup file: {e}")),
            ),
            None => self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::Internal, "backup read failed"),
            ),
        }
        drop(room);
    }

    /// Ends a backup session, unpinning its image.
    pub(in crate::net) fn backup_end(&mut self, corr_id: u32, e: BackupEnd) {
        let opcode = Opcode::BackupEnd;
        // Idempotent, like Unsubscribe.
        self.backups.remove(&e.backup);
        self.send(corr_id, opcode, &Response::BackupEndOk);
    }
}
