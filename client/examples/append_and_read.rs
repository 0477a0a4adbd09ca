//! Appends a few events to a stream and reads them back.
//!
//! ```sh
//! cargo run --release -p logbook-server &           # logbookd on 127.0.0.1:7117
//! cargo run -p logbook-client --example append_and_read
//! LOGBOOK_SERVER=10.0.0.5:7117 cargo run -p logbook-client --example append_and_read
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use logbook_client::{
    Client, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions, ReadStreamOptions,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let addr = std::env::var("LOGBOOK_SERVER").unwrap_or_else(|_| "127.0.0.1:7117".to_owned());
    let client = Client::connect(addr.as_str()).await?;
    let info = client.server_info();
    println!(
        "connected to {addr}: logbookd {} (protocol {}), round trip {:?}",
        info.server_version,
        info.protocol_version,
        client.ping().await?
    );

    // A fresh stream per run, so the example can run again and again.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let stream = format!("example-account-{nanos}");
    // Event ids must be unique; a real program would use UUIDs (v4 or v7).
    let id = |n: u128| EventId::from_u128((nanos << 8) | n);

    let opened = client
        .append(
            stream.as_str(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(id(0), "AccountOpened", r#"{"owner":"ada"}"#)],
        )
        .await?;
    println!("opened {stream} at log position {}", opened.first_position);

    let deposits = (1..=3)
        .map(|n| {
            NewEvent::new(
                id(n),
                "MoneyDeposited",
                format!(r#"{{"amount":{}}}"#, n * 10),
            )
            .with_metadata(r#"{"source":"example"}"#)
        })
        .collect();
    let deposited = client
        .append(
            stream.as_str(),
            ExpectedVersion::Exact(opened.last_version),
            deposits,
        )
        .await?;
    println!(
        "deposited versions {}..={}",
        deposited.first_version, deposited.last_version
    );

    // Optimistic concurrency: appending with a stale version is refused.
    match client
        .append(
            stream.as_str(),
            ExpectedVersion::Exact(opened.last_version),
            vec![NewEvent::new(id(9), "MoneyWithdrawn", r#"{"amount":5}"#)],
        )
        .await
    {
        Err(Error::WrongExpectedVersion { actual, .. }) => {
            println!("stale append refused; the stream is at {actual:?}")
        }
        other => println!("unexpected: {other:?}"),
    }

    let mut events = client.read_stream(stream.as_str(), ReadStreamOptions::default());
    while let Some(event) = events.try_next().await? {
        println!(
            "  {stream} v{} @{} {} {}",
            event.version,
            event.position,
            event.event_type,
            String::from_utf8_lossy(&event.data)
        );
    }

    let newest = client
        .read_all_page(ReadAllOptions::default().backward().max_count(1))
        .await?;
    println!("{} events in the store", newest.head);
    Ok(())
}
