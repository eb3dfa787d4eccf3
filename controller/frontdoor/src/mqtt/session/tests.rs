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
