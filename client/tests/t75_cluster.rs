//! The client against a cluster, two fake nodes standing in for a
//! follower and the leader: the members are learned from Hello, a
//! `NotLeader` answer is followed to the leader, and an append whose reply
//! was lost is resent unchanged (same event ids) until a node answers it.

mod common;

use common::{FakeServer, Handshake, hello_ok, options};
use logbook_client::{Client, EventId, ExpectedVersion, NewEvent};
use logbook_protocol::{
    AppendResult, ErrorCode, ErrorReply, LogPosition, Opcode, Request, Response, StreamVersion,
};

fn ok(position: u64) -> Response {
    Response::AppendOk(AppendResult {
        first_version: StreamVersion(0),
        last_version: StreamVersion(0),
        first_position: LogPosition(position),
        last_position: LogPosition(position),
    })
}

#[tokio::test]
async fn a_follower_redirects_to_the_leader_and_a_lost_reply_is_resent() {
    // A client that does not follow would leave the fake nodes waiting.
    tokio::time::timeout(std::time::Duration::from_secs(30), redirect_and_resend())
        .await
        .expect("the client reached the leader and had its answer");
}

async fn redirect_and_resend() {
    // Both nodes say who the members are and that the second leads.
    // Addresses chosen first: each node's Hello names both.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
    };
    let (follower_port, leader_port) = (free(), free());
    let mut hello = hello_ok("fake-node");
    hello.members = vec![follower_port.to_string(), leader_port.to_string()];
    let mut follower = FakeServer::start_on(follower_port, Handshake::Accept(hello.clone())).await;
    let mut leader = FakeServer::start_on(leader_port, Handshake::Accept(hello)).await;

    // Given only the follower's address.
    let client = Client::connect_any([follower.addr], options())
        .await
        .unwrap();
    let mut f = follower.accept().await;
    let event = NewEvent::new(EventId::from_u128(7), "Opened", "{}");
    let append = {
        let client = client.clone();
        let event = event.clone();
        tokio::spawn(async move {
            client
                .append("acct-1", ExpectedVersion::NoStream, vec![event])
                .await
        })
    };
    // The follower redirects.
    let (corr, first) = f.expect().await;
    f.error(
        corr,
        Opcode::Append,
        ErrorReply::new(ErrorCode::NotLeader, "not the leader")
            .with_leader(leader.addr.to_string()),
    )
    .await;
    // The leader gets the same append; its reply is lost.
    let mut l = leader.accept().await;
    let (_, second) = l.expect().await;
    assert_eq!(second, first, "the redirected append is the same request");
    drop(l);
    // The client resends it, unchanged, to whichever node it reaches.
    let third = tokio::select! {
        mut c = leader.accept() => {
            let (corr, r) = c.expect().await;
            c.reply(corr, ok(41)).await;
            // Kept open until the client has its answer.
            let result = append.await.unwrap().unwrap();
            assert_eq!(result.first_position, LogPosition(41));
            r
        }
        mut c = follower.accept() => {
            let (corr, r) = c.expect().await;
            c.error(
                corr,
                Opcode::Append,
                ErrorReply::new(ErrorCode::NotLeader, "not the leader")
                    .with_leader(leader.addr.to_string()),
            )
            .await;
            let mut c = leader.accept().await;
            let (corr, again) = c.expect().await;
            assert_eq!(again, r);
            c.reply(corr, ok(41)).await;
            let result = append.await.unwrap().unwrap();
            assert_eq!(result.first_position, LogPosition(41));
            r
        }
    };
    assert_eq!(third, first, "the resent append carries the same event ids");
    let Request::Append(a) = third else {
        panic!("not an append")
    };
    assert_eq!(a.events[0].id, event.id);
}
