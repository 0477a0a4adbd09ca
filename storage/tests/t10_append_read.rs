//! Appends and reads through the public engine API, on a real directory.

mod common;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, LogPosition, StreamVersion};
use logbook_storage::{AppendError, Store};

#[tokio::test]
async fn append_then_read_stream_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    let a = name("account-1");
    let b = name("account-2");
    let r = store
        .append(&a, ExpectedVersion::NoStream, evs(0, 3))
        .await
        .unwrap();
    assert_eq!(
        (
            r.first_version.0,
            r.last_version.0,
            r.first_position.0,
            r.last_position.0
        ),
        (0, 2, 0, 2)
    );
    let r = store
        .append(&b, ExpectedVersion::Any, evs(3, 1))
        .await
        .unwrap();
    assert_eq!((r.first_version.0, r.first_position.0), (0, 3));
    let r = store
        .append(&a, ExpectedVersion::Exact(StreamVersion(2)), evs(4, 2))
        .await
        .unwrap();
    assert_eq!(
        (r.first_version.0, r.last_version.0, r.first_position.0),
        (3, 4, 4)
    );

    let s = store
        .read_stream("account-1", None, Direction::Forward, 100)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        s.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 4, 5]
    );
    assert_eq!(s.events[3].data, ev(4).data);
    assert_eq!(s.events[3].metadata, ev(4).metadata);
    assert_eq!(s.events[3].id, ev(4).id);
    assert_eq!(s.events[3].event_type, ev(4).event_type);
    assert_eq!(s.next, None);
    assert_eq!(s.last_version, Some(StreamVersion(4)));

    let s = store
        .read_stream("account-1", Some(StreamVersion(3)), Direction::Backward, 2)
        .unwrap();
    assert_eq!(
        s.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert_eq!(s.next, Some(StreamVersion(1)));
    assert_eq!(s.last_version, Some(StreamVersion(4)));

    let all = store.read_all(None, Direction::Forward, 100).unwrap();
    assert_eq!(
        all.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    assert_eq!(all.head, LogPosition(6));
    let back = store.read_all(None, Direction::Backward, 4).unwrap();
    assert_eq!(
        back.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![5, 4, 3, 2]
    );
    assert_eq!(back.next, Some(LogPosition(1)));

    let missing = store
        .read_stream("nope", None, Direction::Forward, 10)
        .unwrap();
    assert!(missing.events.is_empty());
    assert_eq!(missing.last_version, None);

    let err = store
        .append(&a, ExpectedVersion::Exact(StreamVersion(1)), evs(9, 1))
        .await
        .unwrap_err();
    match err {
        AppendError::WrongExpectedVersion {
            expected, actual, ..
        } => {
            assert_eq!(expected, ExpectedVersion::Exact(StreamVersion(1)));
            assert_eq!(actual, Some(StreamVersion(4)));
        }
        e => panic!("{e}"),
    }
    assert!(matches!(
        store
            .append(&name("new"), ExpectedVersion::StreamExists, evs(9, 1))
            .await,
        Err(AppendError::WrongExpectedVersion { actual: None, .. })
    ));
    assert!(matches!(
        store.append(&a, ExpectedVersion::NoStream, evs(9, 1)).await,
        Err(AppendError::WrongExpectedVersion {
            actual: Some(StreamVersion(4)),
            ..
        })
    ));
    store.close().unwrap();

    // Everything is there after a restart.
    let store = Store::open(tiny(dir.path())).unwrap();
    let s = store
        .read_stream("account-1", None, Direction::Forward, 100)
        .unwrap();
    assert_eq!(s.events.len(), 5);
    assert_eq!(store.head(), LogPosition(6));
    let r = store
        .append(&a, ExpectedVersion::Exact(StreamVersion(4)), evs(10, 1))
        .await
        .unwrap();
    assert_eq!((r.first_version.0, r.first_position.0), (5, 6));
}
