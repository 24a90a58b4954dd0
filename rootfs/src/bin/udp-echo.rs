//! `udp-echo PORT`: sends every UDP datagram it receives on PORT back to its sender, forever.

use std::net::UdpSocket;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(port) = args.get(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: udp-echo PORT");
        std::process::exit(2);
    };
    let sock = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp-echo: bind port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("udp-echo: listening on port {port}");
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Err(e) = sock.send_to(&buf[..n], from) {
                    eprintln!("udp-echo: send to {from}: {e}");
                }
            }
            Err(e) => {
                eprintln!("udp-echo: receive: {e}");
                std::process::exit(1);
            }
        }
    }
}
