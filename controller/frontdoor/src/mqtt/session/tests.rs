use super::*;

#[tokio::test]
async fn an_idle_session_stays_small() {
    let (shared, _ingest) = crate::test_shared();
    let (stream, _peer) = tokio::io::duplex(64);
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let task = serve(stream, peer, Listener::Device, shared);
    // Every idle device holds one of these futures; the budget keeps it from growing
    // unnoticed (the rest of a session is its buffers and queue).
    let size = std::mem::size_of_val(&task);
    assert!(size <= 1700, "a session task is {size} bytes");
}

/// A device session over an in-memory stream, subscribed to its whole tree, with a window
/// of one message in flight.
fn test_session(
    shared: &Arc<Shared>,
    stream: tokio::io::DuplexStream,
    id: &Identity,
) -> Session<tokio::io::DuplexStream> {
    Session {
        stream,
        version: Version::V4,
        role: Role::Device(id.clone()),
        peer: "127.0.0.1:1".parse().expect("addr"),
        shared: shared.clone(),
        input: BytesMut::new(),
        output: BytesMut::new(),
        subscriptions: Arc::new(RwLock::new(vec![("d/ns/d/#".into(), 1)])),
        next_pkid: 0,
        inflight: HashMap::new(),
        window: 1,
        waiting: VecDeque::new(),
        sent_commands: HashSet::new(),
        prune_sent_at: downlink::PRUNE_SENT_FROM,
        last_seen_reported: None,
        gateway: None,
        enos: None,
    }
}

/// The watch shows the DeviceCommand `name` (with `uid`) waiting for device `ns/d`.
fn known_command(shared: &Shared, name: &str, uid: &str) {
    let command = crate::commands::waiting_command("ns", "d", name, uid);
    shared.commands.lock().apply(&command);
}

#[tokio::test]
async fn a_full_queue_drops_other_messages_before_a_command_it_took() {
    let (shared, _ingest) = crate::test_shared();
    let (stream, _client) = tokio::io::duplex(1 << 20);
    let id = Identity::new("ns", "d");
    let mut session = test_session(&shared, stream, &id);
    let desired = || Deliver {
        topic: id.downlink(&Downlink::Desired).into(),
        payload: Bytes::from_static(b"{}"),
        qos: 1,
        command: None,
    };
    let command = |name: &str| {
        known_command(&shared, name, &format!("uid-{name}"));
        Deliver {
            topic: id.downlink(&Downlink::Command(name)).into(),
            payload: Bytes::from_static(b"{}"),
            qos: 1,
            command: Some(CommandRef {
                name: name.to_owned(),
                uid: format!("uid-{name}"),
            }),
        }
    };
    let limit = shared.settings.offline_queue;
    session.deliver(desired()); // in flight: the window of one is full
    session.deliver(command("c0"));
    for _ in 0..limit {
        session.deliver(desired());
    }
    assert_eq!(session.waiting.len(), limit);
    assert_eq!(
        session
            .waiting
            .front()
            .and_then(|d| d.command.as_ref())
            .map(|c| c.name.as_str()),
        Some("c0"),
        "the command taken first still waits; older other messages made room"
    );
    // Only commands wait: a further command is not taken, so it is not marked sent either.
    for i in 1..limit {
        session.deliver(command(&format!("c{i}")));
    }
    assert!(session.waiting.iter().all(|d| d.command.is_some()));
    session.deliver(command("late"));
    assert!(session.sent_commands.iter().all(|c| c.name != "late"));
    assert!(
        session
            .waiting
            .iter()
            .all(|d| d.command.as_ref().is_none_or(|c| c.name != "late"))
    );
}

#[tokio::test]
async fn a_command_created_again_under_its_name_is_sent_again_and_the_same_one_only_once() {
    let (shared, _ingest) = crate::test_shared();
    let (stream, _client) = tokio::io::duplex(1 << 20);
    let id = Identity::new("ns", "d");
    let mut session = test_session(&shared, stream, &id);
    let command = |uid: &str| Deliver {
        topic: id.downlink(&Downlink::Command("reboot")).into(),
        payload: Bytes::from_static(b"{}"),
        qos: 1,
        command: Some(CommandRef {
            name: "reboot".into(),
            uid: uid.into(),
        }),
    };
    known_command(&shared, "reboot", "first");
    session.deliver(command("first")); // in flight
    session.deliver(command("first")); // offered again (a watch event, a subscribe)
    assert!(session.waiting.is_empty(), "the same command is taken once");
    // Deleted and created again: another command. A message of one that is no longer the
    // command of its name (here one the session never took) is dropped.
    known_command(&shared, "reboot", "second");
    session.deliver(command("second"));
    session.deliver(command("older"));
    assert_eq!(
        session
            .waiting
            .iter()
            .filter_map(|d| d.command.as_ref())
            .map(|c| c.uid.as_str())
            .collect::<Vec<_>>(),
        ["second"]
    );
}

#[tokio::test]
async fn a_session_forgets_the_commands_it_sent_once_they_are_answered() {
    let (shared, _ingest) = crate::test_shared();
    let (stream, _client) = tokio::io::duplex(1 << 20);
    let id = Identity::new("ns", "d");
    let mut session = test_session(&shared, stream, &id);
    let send = |session: &mut Session<tokio::io::DuplexStream>, i: usize| {
        let name = format!("c{i}");
        known_command(&shared, &name, &format!("u{i}"));
        session.deliver(Deliver {
            topic: id.downlink(&Downlink::Command(&name)).into(),
            payload: Bytes::from_static(b"{}"),
            qos: 1,
            command: Some(CommandRef {
                name: name.clone(),
                uid: format!("u{i}"),
            }),
        });
    };
    for i in 0..downlink::PRUNE_SENT_FROM {
        send(&mut session, i);
    }
    assert_eq!(session.sent_commands.len(), downlink::PRUNE_SENT_FROM);
    // All but the first are answered; the next one sent prunes the rest.
    for i in 1..downlink::PRUNE_SENT_FROM {
        assert!(
            shared
                .commands
                .lock()
                .mark_answered(&id, &format!("c{i}"), true)
        );
    }
    send(&mut session, downlink::PRUNE_SENT_FROM);
    let mut left: Vec<&str> = session
        .sent_commands
        .iter()
        .map(|c| c.uid.as_str())
        .collect();
    left.sort_unstable();
    assert_eq!(left, ["u0", "u64"]);
}
