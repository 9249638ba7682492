//! rtnetlink (`NETLINK_ROUTE`) with libc only: wait for a link by name, MAC
//! or IB GUID (a dump of `RTM_GETLINK`, then `RTM_NEWLINK` notifications of
//! the `RTMGRP_LINK` group), set it up, add an address and a default route.
//!
//! Layout (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h,
//! if_addr.h): `nlmsghdr` (16 bytes: len, type, flags, seq, pid), then the
//! family header (`ifinfomsg` 16, `ifaddrmsg` 8, `rtmsg` 12 bytes), then
//! attributes (`rtattr`: u16 len, u16 type, data, padded to 4).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::InterfaceSelector;
use crate::dhcp::client_id::parse_hex;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A socket call failed.
    #[error("netlink {operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("netlink {operation}: the kernel refused: {source}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// The errno.
        source: std::io::Error,
    },
    /// The selector is malformed.
    #[error("interface selector {0}")]
    Selector(String),
    /// No link matched before the deadline.
    #[error("no interface {wanted} appeared within {waited:?}; links seen: {seen}")]
    Timeout {
        /// The selector, described.
        wanted: String,
        /// How long it waited.
        waited: Duration,
        /// Every link seen (name and address).
        seen: String,
    },
}

/// A network link as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address (6 bytes Ethernet, 20 bytes IPoIB).
    pub address: Vec<u8>,
    /// `ifi_flags`.
    pub flags: u32,
}

/// A compiled [`InterfaceSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMatch {
    /// By name.
    Name(String),
    /// By 6-byte MAC.
    Mac([u8; 6]),
    /// By the last 8 bytes of a 20-byte IPoIB address.
    Guid([u8; 8]),
    /// The first link with a 6-byte address that is not loopback.
    FirstEthernet,
}

impl LinkMatch {
    /// Parses the selector's address text.
    pub fn new(selector: &InterfaceSelector) -> Result<LinkMatch, NetlinkError> {
        Ok(match selector {
            InterfaceSelector::Name(n) => LinkMatch::Name(n.clone()),
            InterfaceSelector::Mac(text) => LinkMatch::Mac(
                parse_hex(text)
                    .and_then(|b| <[u8; 6]>::try_from(b).ok())
                    .ok_or_else(|| {
                        NetlinkError::Selector(format!("mac {text:?}: want 6 hex bytes"))
                    })?,
            ),
            InterfaceSelector::Guid(text) => LinkMatch::Guid(
                parse_hex(text)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .ok_or_else(|| {
                        NetlinkError::Selector(format!("guid {text:?}: want 8 hex bytes"))
                    })?,
            ),
            InterfaceSelector::FirstEthernet => LinkMatch::FirstEthernet,
        })
    }

    /// Whether `link` is the one.
    pub fn matches(&self, link: &Link) -> bool {
        match self {
            LinkMatch::Name(n) => &link.name == n,
            LinkMatch::Mac(mac) => link.address == mac,
            LinkMatch::Guid(guid) => link.address.len() == 20 && link.address[12..] == guid[..],
            LinkMatch::FirstEthernet => {
                link.flags & libc::IFF_LOOPBACK as u32 == 0
                    && link.address.len() == 6
                    && link.address != [0; 6]
            }
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            LinkMatch::Name(n) => format!("named {n}"),
            LinkMatch::Mac(m) => format!("with MAC {}", hex_colon(m)),
            LinkMatch::Guid(g) => format!("with IB port GUID {}", hex_colon(g)),
            LinkMatch::FirstEthernet => "with an Ethernet address".into(),
        }
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One received netlink message: type, sequence number, body after `nlmsghdr`.
type Reply = (u16, u32, Vec<u8>);

/// An rtnetlink socket.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

fn io(operation: &'static str) -> impl FnOnce(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { operation, source }
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Attributes from `data` (after the family header): (type, payload).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    out
}

/// Parses the body of an `RTM_NEWLINK` message (after `nlmsghdr`).
pub fn parse_link(body: &[u8]) -> Option<Link> {
    if body.len() < IFINFOMSG_LEN {
        return None;
    }
    let index = i32::from_ne_bytes(body[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(body[8..12].try_into().ok()?);
    let mut link = Link {
        index: u32::try_from(index).ok()?,
        name: String::new(),
        address: Vec::new(),
        flags,
    };
    for (kind, data) in attrs(&body[IFINFOMSG_LEN..]) {
        match kind {
            libc::IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                link.name = String::from_utf8_lossy(&data[..end]).into_owned();
            }
            libc::IFLA_ADDRESS => link.address = data.to_vec(),
            _ => {}
        }
    }
    Some(link)
}

impl RouteSocket {
    /// Opens a socket; `groups` are the multicast groups to join (`RTMGRP_LINK`).
    pub fn open(groups: u32) -> Result<RouteSocket, NetlinkError> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io("socket")(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = groups;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io("bind")(std::io::Error::last_os_error()));
        }
        Ok(RouteSocket { fd, seq: 1 })
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> Result<u32, NetlinkError> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: msg is a valid buffer of msg.len() bytes; the kernel is the
        // default destination of an unconnected netlink socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io("send")(std::io::Error::last_os_error()));
        }
        Ok(self.seq)
    }

    /// Receives one datagram, waiting at most `timeout`; None on timeout.
    fn recv(&self, timeout: Duration) -> Result<Option<Vec<Reply>>, NetlinkError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(Some(Vec::new()));
            }
            return Err(io("poll")(e));
        }
        if rc == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io("recv")(std::io::Error::last_os_error()));
        }
        let mut data = &buf[..n as usize];
        let mut out = Vec::new();
        while data.len() >= NLMSG_HDRLEN {
            let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
            if len < NLMSG_HDRLEN || len > data.len() {
                break;
            }
            out.push((kind, seq, data[NLMSG_HDRLEN..len].to_vec()));
            data = &data[((len + 3) & !3).min(data.len())..];
        }
        Ok(Some(out))
    }

    /// Sends a request with `NLM_F_ACK` and waits for its answer.
    fn request(
        &mut self,
        operation: &'static str,
        kind: u16,
        flags: u16,
        body: &[u8],
    ) -> Result<(), NetlinkError> {
        let seq = self.send(
            kind,
            flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            body,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(messages) = self.recv(left)? else {
                return Err(NetlinkError::Io {
                    operation,
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            };
            for (kind, got_seq, body) in messages {
                if kind == libc::NLMSG_ERROR as u16 && got_seq == seq && body.len() >= 4 {
                    let errno = -i32::from_ne_bytes(body[0..4].try_into().expect("4 bytes"));
                    return match errno {
                        0 => Ok(()),
                        libc::EEXIST => Ok(()),
                        e => Err(NetlinkError::Refused {
                            operation,
                            source: std::io::Error::from_raw_os_error(e),
                        }),
                    };
                }
            }
        }
    }

    /// Waits until a link matching `wanted` exists; a dump first, then
    /// notifications (the socket must have joined `RTMGRP_LINK`).
    pub fn wait_for_link(
        &mut self,
        wanted: &LinkMatch,
        timeout: Duration,
    ) -> Result<Link, NetlinkError> {
        let started = Instant::now();
        self.wait_until(&|link| wanted.matches(link), timeout)?
            .map_err(|seen| {
                let seen = if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.iter()
                        .map(|l| format!("{} ({})", l.name, hex_colon(&l.address)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                NetlinkError::Timeout {
                    wanted: wanted.describe(),
                    waited: started.elapsed(),
                    seen,
                }
            })
    }

    /// Waits until link `index` has carrier (`IFF_LOWER_UP`: cable and
    /// autonegotiation on Ethernet, an active port on InfiniBand, which
    /// waits for the subnet manager); false after `timeout`.
    pub fn wait_for_carrier(
        &mut self,
        index: u32,
        timeout: Duration,
    ) -> Result<bool, NetlinkError> {
        let lower_up = libc::IFF_LOWER_UP as u32;
        let found = self.wait_until(&|l| l.index == index && l.flags & lower_up != 0, timeout)?;
        Ok(found.is_ok())
    }

    /// A dump, then notifications, until `wanted` matches a link (Ok) or
    /// the time is up (Err with every link seen).
    fn wait_until(
        &mut self,
        wanted: &dyn Fn(&Link) -> bool,
        timeout: Duration,
    ) -> Result<Result<Link, Vec<Link>>, NetlinkError> {
        let started = Instant::now();
        let mut seen: Vec<Link> = Vec::new();
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[0] = libc::AF_UNSPEC as u8;
        self.send(
            libc::RTM_GETLINK,
            (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            &body,
        )?;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(Err(seen));
            }
            let Some(messages) = self.recv(left)? else {
                continue;
            };
            for (kind, _, body) in messages {
                if kind != libc::RTM_NEWLINK {
                    continue;
                }
                if let Some(link) = parse_link(&body) {
                    if wanted(&link) {
                        return Ok(Ok(link));
                    }
                    if !seen.iter().any(|l| l.index == link.index) {
                        seen.push(link);
                    }
                }
            }
        }
    }

    /// Sets `IFF_UP` on the link.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[0] = libc::AF_UNSPEC as u8;
        body[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
        body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        self.request("set link up", libc::RTM_NEWLINK, 0, &body)
    }

    /// Adds `address/prefix_len` (with its broadcast address) to the link.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let mut body = vec![libc::AF_INET as u8, prefix_len, 0, libc::RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&index.to_ne_bytes());
        push_attr(&mut body, libc::IFA_LOCAL, &address.octets());
        push_attr(&mut body, libc::IFA_ADDRESS, &address.octets());
        if prefix_len < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(address) | host_bits);
            push_attr(&mut body, libc::IFA_BROADCAST, &broadcast.octets());
        }
        self.request(
            "add address",
            libc::RTM_NEWADDR,
            (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16,
            &body,
        )
    }

    /// Adds the default route via `gateway` on the link (main table, proto boot).
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut body = vec![
            libc::AF_INET as u8,
            0, // dst_len: default route
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_UNIVERSE,
            libc::RTN_UNICAST,
        ];
        body.extend_from_slice(&0u32.to_ne_bytes());
        push_attr(&mut body, libc::RTA_GATEWAY, &gateway.octets());
        push_attr(&mut body, libc::RTA_OIF, &index.to_ne_bytes());
        self.request(
            "add default route",
            libc::RTM_NEWROUTE,
            (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16,
            &body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_link_message() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[4..8].copy_from_slice(&2i32.to_ne_bytes());
        push_attr(&mut body, libc::IFLA_IFNAME, b"ib0\0");
        let mut address = vec![0u8; 12];
        address.extend_from_slice(&[0x50, 0x6b, 0x4b, 0x03, 0x00, 0x12, 0x34, 0x56]);
        push_attr(&mut body, libc::IFLA_ADDRESS, &address);
        let link = parse_link(&body).unwrap();
        assert_eq!((link.index, link.name.as_str()), (2, "ib0"));
        let by_guid = LinkMatch::new(&InterfaceSelector::Guid("506b4b0300123456".into())).unwrap();
        assert!(by_guid.matches(&link));
        assert!(!LinkMatch::FirstEthernet.matches(&link));
    }
}
