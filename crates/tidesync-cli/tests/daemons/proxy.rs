//! A TCP proxy in front of the reference server that holds chosen requests until the test
//! releases them, then delivers them even if their client died meanwhile, as a slow server or
//! a buffering reverse proxy does (the reference server itself drops a request whose client
//! hung up, so it alone cannot show a dead process's request landing late).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a connection whose client is gone waits for the server's last answer.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    /// Requests still to hold.
    to_hold: AtomicUsize,
    /// The held requests may go.
    released: AtomicBool,
    /// The request lines (`PUT /api/posts/p0 HTTP/1.1`) of the held requests.
    held: Mutex<Vec<String>>,
    /// Held requests delivered to the server.
    delivered: AtomicUsize,
}

/// The proxy; runs until the test process ends.
pub(crate) struct SlowProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
}

impl SlowProxy {
    /// Proxies to `upstream`; requests picked by [`SlowProxy::hold_next`] wait for
    /// [`SlowProxy::release`].
    pub(crate) fn start(upstream: SocketAddr) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
        let addr = listener.local_addr().expect("address");
        let counters = Arc::new(Counters::default());
        let shared = Arc::clone(&counters);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counters = Arc::clone(&shared);
                std::thread::spawn(move || {
                    if let Ok(server) = TcpStream::connect(upstream) {
                        relay(client, server, &counters);
                    }
                });
            }
        });
        SlowProxy { addr, counters }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds the next `n` requests whose method is `PUT`.
    pub(crate) fn hold_next(&self, n: usize) {
        self.counters.to_hold.store(n, Ordering::SeqCst);
    }

    /// Holds no further requests (those held stay held).
    pub(crate) fn stop_holding(&self) {
        self.counters.to_hold.store(0, Ordering::SeqCst);
    }

    /// Lets the held requests go on to the server.
    pub(crate) fn release(&self) {
        self.counters.released.store(true, Ordering::SeqCst);
    }

    /// The paths of the requests held so far.
    pub(crate) fn held(&self) -> Vec<String> {
        self.counters
            .held()
            .iter()
            .filter_map(|line| line.split(' ').nth(1).map(str::to_owned))
            .collect()
    }

    /// Held requests delivered to the server so far.
    pub(crate) fn delivered(&self) -> usize {
        self.counters.delivered.load(Ordering::SeqCst)
    }
}

impl Counters {
    fn held(&self) -> MutexGuard<'_, Vec<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn relay(mut client: TcpStream, mut server: TcpStream, counters: &Counters) {
    let (Ok(mut client_out), Ok(mut server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let client_gone = Arc::new(AtomicBool::new(false));
    let gone = Arc::clone(&client_gone);
    // Server → client: keeps reading the server's answers after the client died (writes to
    // the dead client fail and are ignored), until the server is quiet for `DRAIN`.
    let answers = std::thread::spawn(move || {
        let _ = server_in.set_read_timeout(Some(DRAIN));
        let mut buf = [0u8; 16 * 1024];
        loop {
            match server_in.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let _ = client_out.write_all(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if gone.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    // Client → server, holding the picked requests; the server's side stays open when the
    // client goes away, so what was read is still delivered and answered.
    let mut buf = [0u8; 64 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let hold = buf[..n].starts_with(b"PUT ")
                    && counters
                        .to_hold
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_ok();
                if hold {
                    let line = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    counters.held().push(line);
                    while !counters.released.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
                if hold {
                    counters.delivered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
    client_gone.store(true, Ordering::SeqCst);
    let _ = answers.join();
}
