//! `Stats`: one snapshot of the engine's and the server's figures (built
//! by `net::stats`).

use logbook_protocol::{Opcode, Response};

use crate::net::connection::Connection;

impl Connection {
    /// Answers with a snapshot of the figures.
    pub(in crate::net) fn stats(&self, corr_id: u32) {
        let opcode = Opcode::Stats;
        let sh = &self.shared;
        let mut stats = crate::net::stats::snapshot(&sh.store, &sh.stats, &sh.meter);
        stats.cluster = sh
            .config
            .cluster
            .as_ref()
            .map(|node| crate::net::stats::cluster(&node.status()));
        self.send(corr_id, opcode, &Response::StatsOk(Box::new(stats)));
    }
}
