//! The DTLS listener's demultiplexer (pure): which session of a peer address a datagram
//! goes to, when a ClientHello opens a session or a handshake beside an established one, and
//! how many handshakes each IP address has under way.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use tokio::sync::mpsc;

/// A session's slot in the demultiplexer.
pub(super) struct Slot {
    pub(super) generation: u64,
    pub(super) tx: mpsc::Sender<Vec<u8>>,
    pub(super) established: bool,
}

/// Handshakes under way from one IP address at once. A handshake holds a slot until it ends
/// or times out, and without a limit one host could fill the session table from many ports
/// with ClientHellos it never follows up; devices behind one NAT that start together only
/// wait for the ones before them.
pub(super) const HANDSHAKES_PER_ADDRESS: usize = 64;

/// Sessions by peer address, and how many are still handshaking per IP address.
#[derive(Default)]
pub(super) struct Demux {
    pub(super) table: Mutex<Table>,
    pub(super) next: AtomicU64,
}

/// One peer address's sessions.
struct Entry {
    /// The session in use (or its handshake).
    current: Slot,
    /// A new handshake from the same address while `current` is established; it replaces
    /// `current` once it completes.
    pending: Option<Slot>,
}

#[derive(Default)]
pub(super) struct Table {
    slots: HashMap<SocketAddr, Entry>,
    handshaking: HashMap<IpAddr, usize>,
}

/// Where the demultiplexer sends a datagram.
pub(super) enum Route<'a> {
    /// To a session's queue.
    To(&'a mpsc::Sender<Vec<u8>>),
    /// A ClientHello for a new session of the address.
    NewSession,
    /// A ClientHello beside the address's established session.
    NewHandshake,
    /// Nowhere: not a ClientHello, and no session of the address.
    Drop,
}

impl Table {
    /// Peer addresses with a session.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Where a datagram from `peer` goes.
    pub(super) fn route(&self, peer: SocketAddr, data: &[u8]) -> Route<'_> {
        let Some(entry) = self.slots.get(&peer) else {
            return if is_client_hello(data) {
                Route::NewSession
            } else {
                Route::Drop
            };
        };
        if !entry.current.established {
            // The handshake's own records and retransmissions, ClientHellos included.
            return Route::To(&entry.current.tx);
        }
        // Application data is the established session's until the new one replaces it, which
        // happens as the server sends its Finished: the client sends nothing of the new
        // session before it has that.
        match &entry.pending {
            Some(pending) if is_handshake_record(data) => Route::To(&pending.tx),
            None if is_client_hello(data) => Route::NewHandshake,
            _ => Route::To(&entry.current.tx),
        }
    }

    /// Counts a handshake of `peer`'s IP address; false when it has too many under way.
    fn count_handshake(&mut self, peer: SocketAddr) -> bool {
        let count = self.handshaking.entry(peer.ip()).or_default();
        if *count >= HANDSHAKES_PER_ADDRESS {
            return false;
        }
        *count += 1;
        true
    }

    /// Opens a slot for a new handshake; false when the address has too many under way.
    pub(super) fn open(&mut self, peer: SocketAddr, slot: Slot) -> bool {
        if !self.count_handshake(peer) {
            return false;
        }
        let entry = Entry {
            current: slot,
            pending: None,
        };
        if let Some(old) = self.slots.insert(peer, entry) {
            self.forget_entry(peer, &old);
        }
        true
    }

    /// Opens a slot for a handshake beside the established session of `peer`; false when the
    /// address has too many under way.
    pub(super) fn open_beside(&mut self, peer: SocketAddr, slot: Slot) -> bool {
        if !self.count_handshake(peer) {
            return false;
        }
        match self.slots.get_mut(&peer) {
            Some(entry) if entry.pending.is_none() => {
                entry.pending = Some(slot);
                true
            }
            _ => {
                self.handshake_over(peer.ip());
                false
            }
        }
    }

    /// Removes the slot of `generation` at `peer`: a pending handshake, or the current
    /// session (a pending handshake then takes its place).
    fn remove(&mut self, peer: SocketAddr, generation: u64) -> Option<Slot> {
        let entry = self.slots.get_mut(&peer)?;
        let removed = if entry.current.generation == generation {
            match entry.pending.take() {
                Some(pending) => Some(std::mem::replace(&mut entry.current, pending)),
                None => self.slots.remove(&peer).map(|entry| entry.current),
            }
        } else if entry
            .pending
            .as_ref()
            .is_some_and(|p| p.generation == generation)
        {
            entry.pending.take()
        } else {
            None
        }?;
        self.forget(peer, &removed);
        Some(removed)
    }

    /// Whether another session of `peer` took the place of the slot of `generation`: a
    /// newer handshake of the address that completed, or one opened after it was removed.
    /// A slot merely removed (its handshake failed, its session closed) is not replaced: its
    /// last words (an alert, a close_notify) are for its own client.
    fn replaced(&self, peer: SocketAddr, generation: u64) -> bool {
        self.slots.get(&peer).is_some_and(|entry| {
            entry.current.generation != generation
                && entry
                    .pending
                    .as_ref()
                    .is_none_or(|p| p.generation != generation)
        })
    }

    /// The slot of `generation` at `peer` finished its handshake. A pending one replaces the
    /// session beside it, which ends as its queue closes.
    fn established(&mut self, peer: SocketAddr, generation: u64) {
        let Some(entry) = self.slots.get_mut(&peer) else {
            return;
        };
        if entry.current.generation == generation {
            if entry.current.established {
                return;
            }
            entry.current.established = true;
        } else if entry
            .pending
            .as_ref()
            .is_some_and(|p| p.generation == generation)
        {
            if let Some(mut pending) = entry.pending.take() {
                pending.established = true;
                entry.current = pending;
            }
        } else {
            return;
        }
        self.handshake_over(peer.ip());
    }

    /// Counts an entry's slots that leave the table out of its address's handshakes.
    fn forget_entry(&mut self, peer: SocketAddr, entry: &Entry) {
        self.forget(peer, &entry.current);
        if let Some(pending) = &entry.pending {
            self.forget(peer, pending);
        }
    }

    /// Counts a slot that leaves the table out of its address's handshakes.
    fn forget(&mut self, peer: SocketAddr, slot: &Slot) {
        if !slot.established {
            self.handshake_over(peer.ip());
        }
    }

    /// One handshake of `ip` is over (established, failed or gone).
    fn handshake_over(&mut self, ip: IpAddr) {
        if let Some(count) = self.handshaking.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.handshaking.remove(&ip);
            }
        }
    }
}

impl Demux {
    pub(super) fn remove(&self, peer: SocketAddr, generation: u64) {
        self.table.lock().remove(peer, generation);
    }

    pub(super) fn established(&self, peer: SocketAddr, generation: u64) {
        self.table.lock().established(peer, generation);
    }

    pub(super) fn replaced(&self, peer: SocketAddr, generation: u64) -> bool {
        self.table.lock().replaced(peer, generation)
    }
}

/// Whether a datagram the server sends carries its Finished (a handshake record of epoch 1):
/// the last flight of its handshake, after which the client may send application data.
pub(super) fn carries_finished(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(head) = record_head(rest) {
        if head == (HANDSHAKE, 1) {
            return true;
        }
        let length = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        rest = rest.get(RECORD_HEADER + length..).unwrap_or_default();
    }
    false
}

/// Record content types.
pub(super) const CHANGE_CIPHER_SPEC: u8 = 20;
pub(super) const ALERT: u8 = 21;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const APPLICATION_DATA: u8 = 23;

/// A record header: type, version (2 bytes), epoch (2), sequence number (6), length (2).
pub(super) const RECORD_HEADER: usize = 13;

/// The content type and epoch of the record `data` starts with, if it holds a whole header.
fn record_head(data: &[u8]) -> Option<(u8, u16)> {
    (data.len() >= RECORD_HEADER).then(|| (data[0], u16::from_be_bytes([data[3], data[4]])))
}

/// Whether a datagram starts with a ClientHello of epoch 0 (a new handshake).
fn is_client_hello(data: &[u8]) -> bool {
    // The handshake message's type (1) follows the record header.
    record_head(data) == Some((HANDSHAKE, 0)) && data.get(RECORD_HEADER) == Some(&1)
}

/// Whether a datagram starts with a record of a handshake under way, not of an established
/// session: a plain (epoch 0) handshake, ChangeCipherSpec or alert record, or the encrypted
/// Finished (a handshake record of epoch 1). An established session sends application data,
/// and its alerts encrypted.
fn is_handshake_record(data: &[u8]) -> bool {
    match record_head(data) {
        Some((CHANGE_CIPHER_SPEC | ALERT, epoch)) => epoch == 0,
        Some((HANDSHAKE, epoch)) => epoch <= 1,
        _ => false,
    }
}

/// A DTLS 1.2 ClientHello offering TLS_PSK_WITH_AES_128_CCM_8, in one record.
#[cfg(test)]
pub(in crate::coap) fn client_hello() -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend([7u8; 32]); // random
    body.extend([0, 0]); // no session id, no cookie
    body.extend([0, 2, 0xc0, 0xa8]); // one cipher suite
    body.extend([1, 0]); // null compression
    body.extend([0, 0]); // no extensions
    let len = body.len() as u32;
    let mut handshake = vec![1]; // client_hello
    handshake.extend(&len.to_be_bytes()[1..]);
    handshake.extend([0, 0, 0, 0, 0]); // message_seq, fragment_offset
    handshake.extend(&len.to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_epoch_zero_client_hello_opens_a_session() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0];
        assert!(is_client_hello(&hello));
        hello[4] = 1;
        assert!(!is_client_hello(&hello), "epoch 1 is inside a session");
        hello[4] = 0;
        hello[13] = 16;
        assert!(!is_client_hello(&hello), "a ClientKeyExchange");
        assert!(!is_client_hello(&[23, 0xfe, 0xfd]), "application data");
    }

    /// A record header of `content` type and `epoch` (and one byte of body).
    fn record(content: u8, epoch: u16) -> Vec<u8> {
        let [high, low] = epoch.to_be_bytes();
        vec![content, 0xfe, 0xfd, high, low, 0, 0, 0, 0, 0, 1, 0, 1, 0]
    }

    #[test]
    fn the_server_s_finished_is_found_among_the_records_of_a_datagram() {
        let change_cipher_spec = record(20, 0);
        let finished = record(22, 1);
        assert!(carries_finished(&finished));
        assert!(carries_finished(
            &[change_cipher_spec.clone(), finished].concat()
        ));
        assert!(!carries_finished(&change_cipher_spec));
        assert!(!carries_finished(&client_hello()));
        assert!(!carries_finished(&record(23, 1)), "application data");
        assert!(!carries_finished(&[22, 0xfe, 0xfd, 0, 1]), "a cut header");
    }

    #[test]
    fn handshake_records_are_told_from_an_established_session_s() {
        assert!(is_handshake_record(&client_hello()));
        assert!(
            is_handshake_record(&record(22, 1)),
            "the encrypted Finished"
        );
        assert!(is_handshake_record(&record(20, 0)), "ChangeCipherSpec");
        assert!(is_handshake_record(&record(21, 0)), "a plain alert");
        assert!(!is_handshake_record(&record(23, 1)), "application data");
        assert!(!is_handshake_record(&record(21, 1)), "an encrypted alert");
        assert!(!is_handshake_record(&record(22, 2)));
        assert!(!is_handshake_record(&[22, 0xfe]), "too short");
    }

    #[test]
    fn a_client_hello_beside_an_established_session_leaves_it_until_its_handshake_completes() {
        let peer: SocketAddr = "127.0.0.1:5683".parse().expect("addr");
        let mut table = Table::default();
        let slot = |generation| {
            let (tx, rx) = mpsc::channel(8);
            let slot = Slot {
                generation,
                tx,
                established: false,
            };
            (slot, rx)
        };
        // Which session a datagram reaches (its queue's receiver gets it).
        let send = |table: &Table, data: &[u8]| match table.route(peer, data) {
            Route::To(tx) => tx.try_send(data.to_vec()).is_ok(),
            _ => false,
        };
        let (first, mut first_rx) = slot(1);
        assert!(table.open(peer, first));
        table.established(peer, 1);
        assert!(table.handshaking.is_empty());
        let app_data = record(23, 1);
        assert!(matches!(
            table.route(peer, &client_hello()),
            Route::NewHandshake
        ));

        // A handshake that never completes: the session is untouched.
        let (second, mut second_rx) = slot(2);
        assert!(table.open_beside(peer, second));
        assert!(send(&table, &client_hello()) && send(&table, &record(22, 1)));
        assert!(send(&table, &app_data));
        assert_eq!(second_rx.try_recv().ok(), Some(client_hello()));
        assert_eq!(second_rx.try_recv().ok(), Some(record(22, 1)));
        // Application data is the established session's.
        assert_eq!(first_rx.try_recv().ok(), Some(app_data.clone()));
        assert!(
            first_rx.try_recv().is_err(),
            "the handshake's records are not the session's"
        );
        assert!(second_rx.try_recv().is_err());
        assert!(!table.replaced(peer, 1) && !table.replaced(peer, 2));
        assert!(table.remove(peer, 2).is_some());
        assert!(send(&table, &app_data));
        assert_eq!(first_rx.try_recv().ok(), Some(app_data.clone()));
        assert!(table.handshaking.is_empty());

        // One that completes replaces it; the old session's queue closes.
        let (third, mut third_rx) = slot(3);
        assert!(matches!(
            table.route(peer, &client_hello()),
            Route::NewHandshake
        ));
        assert!(table.open_beside(peer, third));
        table.established(peer, 3);
        assert!(matches!(
            first_rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(send(&table, &app_data));
        assert_eq!(third_rx.try_recv().ok(), Some(app_data));
        assert!(table.handshaking.is_empty());
        // The old session's end does not touch the new one, and it sends nothing more.
        assert!(table.replaced(peer, 1));
        assert!(table.remove(peer, 1).is_none());
        assert!(table.slots.contains_key(&peer));
        assert!(table.remove(peer, 3).is_some());
        assert!(table.slots.is_empty() && table.handshaking.is_empty());
        // A session removed without a successor (a failed handshake closes its connection,
        // and may still be sending its alert) is not replaced: its client hears the alert.
        assert!(!table.replaced(peer, 3));
    }
}
