//! The DHCP client's socket: `AF_PACKET`/`SOCK_DGRAM` bound to one
//! interface with protocol `ETH_P_IP`, so the kernel adds and strips the
//! link header (Ethernet or IPoIB alike) and we write the IPv4 and UDP
//! headers ourselves. An interface with no address cannot send from
//! 0.0.0.0 through a UDP socket reliably, and a packet socket receives
//! replies to an address the interface does not have yet.
//!
//! The destination link address is the interface's broadcast address
//! (`/sys/class/net/IF/broadcast`): 6 bytes on Ethernet, 20 on IPoIB. The
//! kernel's `packet_snd` (net/packet/af_packet.c) reads `sll_halen` bytes
//! from `sll_addr` even past the 8 bytes of `struct sockaddr_ll`, as long as
//! the address length covers them, so the socket address is built in a
//! larger buffer (as systemd's `sd-dhcp` does).
//!
//! Headers (RFC 791, RFC 768): IPv4 20 bytes, no options, TTL 64, DF clear,
//! protocol 17, checksum over the header; UDP 8 bytes, checksum over the
//! pseudo-header (source, destination, 0, 17, UDP length), 0 sent as 0xffff.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use super::client::{Transport, TransportError};
use super::client_id::parse_hex;

/// UDP port of DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
const ETH_P_IP: u16 = 0x0800;
const PACKET_OUTGOING: u8 = 4;
// linux/if_packet.h: ask for a `tpacket_auxdata` control message per packet.
const SOL_PACKET: i32 = 263;
const PACKET_AUXDATA: i32 = 8;
// The checksum is left to hardware (CHECKSUM_PARTIAL: veth, offloading
// NICs), so the UDP checksum field holds only the pseudo-header sum.
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

/// What the socket needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (`ib0`, `eth0`).
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// ARP hardware type (`/sys/class/net/IF/type`): 1 Ethernet, 32 InfiniBand.
    pub arp_type: u16,
    /// Link address: 6 bytes Ethernet, 20 bytes IPoIB (QPN, subnet prefix, GUID).
    pub address: Vec<u8>,
    /// Link broadcast address, the destination of every DHCP message.
    pub broadcast: Vec<u8>,
}

impl Interface {
    /// Read interface `name` from `sys_root`/class/net (`sys_root` is `/sys` on a running system).
    pub fn from_sysfs(sys_root: &Path, name: &str) -> Result<Interface, TransportError> {
        let dir = sys_root.join("class/net").join(name);
        let read = |file: &str| -> Result<String, TransportError> {
            std::fs::read_to_string(dir.join(file)).map(|s| s.trim().to_string()).map_err(|source| TransportError {
                operation: "reading the interface from /sys/class/net (is the driver loaded and the name right?)",
                interface: name.to_string(),
                source,
            })
        };
        let invalid = |what: &str, text: String| TransportError {
            operation: "reading the interface from /sys/class/net",
            interface: name.to_string(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what} {text:?} is not understood"),
            ),
        };
        let index_text = read("ifindex")?;
        let index = index_text
            .parse()
            .map_err(|_| invalid("ifindex", index_text.clone()))?;
        let type_text = read("type")?;
        let arp_type = type_text
            .parse()
            .map_err(|_| invalid("type", type_text.clone()))?;
        let address_text = read("address")?;
        let address =
            parse_hex(&address_text).ok_or_else(|| invalid("address", address_text.clone()))?;
        let broadcast_text = read("broadcast")?;
        let broadcast = parse_hex(&broadcast_text)
            .ok_or_else(|| invalid("broadcast", broadcast_text.clone()))?;
        Ok(Interface {
            name: name.to_string(),
            index,
            arp_type,
            address,
            broadcast,
        })
    }

    /// The port GUID of an IPoIB interface: the last 8 bytes of its 20-byte address.
    pub fn ipoib_guid(&self) -> Option<[u8; 8]> {
        (self.address.len() == 20).then(|| {
            let mut guid = [0; 8];
            guid.copy_from_slice(&self.address[12..]);
            guid
        })
    }
}

/// A DHCP transport over a packet socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    interface: Interface,
    ip_id: u16,
}

impl PacketSocket {
    /// Open and bind the socket (needs CAP_NET_RAW).
    pub fn open(interface: Interface) -> Result<PacketSocket, TransportError> {
        let error = |operation: &'static str| TransportError {
            operation,
            interface: interface.name.clone(),
            source: io::Error::last_os_error(),
        };
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(error(
                "socket(AF_PACKET, SOCK_DGRAM) (needs root or CAP_NET_RAW)",
            ));
        }
        // SAFETY: `raw` is a new descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ETH_P_IP.to_be();
        address.sll_ifindex = interface.index as i32;
        // SAFETY: the pointer and length describe `address`.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(error("bind(AF_PACKET) to the interface index"));
        }
        let on: i32 = 1;
        // SAFETY: the pointer and length describe `on`.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_AUXDATA,
                (&on as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(error("setsockopt(PACKET_AUXDATA)"));
        }
        Ok(PacketSocket {
            fd,
            interface,
            ip_id: 1,
        })
    }

    fn error(&self, operation: &'static str, source: io::Error) -> TransportError {
        TransportError {
            operation,
            interface: self.interface.name.clone(),
            source,
        }
    }
}

/// `struct sockaddr_ll` followed by room for a 20-byte IPoIB address.
#[repr(C)]
struct LinkAddress {
    ll: libc::sockaddr_ll,
    extra: [u8; 16],
}

impl Transport for PacketSocket {
    fn send(&mut self, dhcp_payload: &[u8]) -> Result<(), TransportError> {
        let packet = udp_ipv4_packet(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            self.ip_id,
            dhcp_payload,
        );
        self.ip_id = self.ip_id.wrapping_add(1);
        let broadcast = &self.interface.broadcast;
        if broadcast.is_empty() || broadcast.len() > 24 {
            return Err(self.error(
                "sendto",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("link broadcast address of {} bytes", broadcast.len()),
                ),
            ));
        }
        // SAFETY: plain data; all-zero is valid.
        let mut to: LinkAddress = unsafe { std::mem::zeroed() };
        to.ll.sll_family = libc::AF_PACKET as u16;
        to.ll.sll_protocol = ETH_P_IP.to_be();
        to.ll.sll_ifindex = self.interface.index as i32;
        to.ll.sll_halen = broadcast.len() as u8;
        // SAFETY: sll_addr and extra are contiguous in the repr(C) struct
        // (sll_addr is the last field of sockaddr_ll) and hold 24 bytes.
        unsafe {
            let dst = std::ptr::addr_of_mut!(to.ll.sll_addr).cast::<u8>();
            std::ptr::copy_nonoverlapping(broadcast.as_ptr(), dst, broadcast.len());
        }
        let name_len = std::mem::size_of::<libc::sockaddr_ll>().max(12 + broadcast.len());
        // SAFETY: buffer and address point to live memory of the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const LinkAddress).cast(),
                name_len as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(self.error("sendto (is the interface up?)", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buffer = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = left.as_millis().min(i32::MAX as u128) as i32
                + i32::from(!left.subsec_nanos().is_multiple_of(1_000_000));
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut poll, 1, millis) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.error("poll", e));
            }
            if rc == 0 {
                return Ok(None);
            }
            // SAFETY: plain data.
            let mut from: LinkAddress = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
            };
            // SAFETY: plain data.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_name = (&mut from as *mut LinkAddress).cast();
            header.msg_namelen = std::mem::size_of::<LinkAddress>() as libc::socklen_t;
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: every pointer in `header` refers to live buffers of the given sizes.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut header, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.error("recvmsg", e));
            }
            // Our own transmissions are looped back to packet sockets.
            if from.ll.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            let mut checksum_ready = true;
            // SAFETY: the CMSG macros walk the control buffer the kernel filled,
            // bounded by msg_controllen; the data is read unaligned.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&header);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == SOL_PACKET && (*cmsg).cmsg_type == PACKET_AUXDATA {
                        let status = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>());
                        checksum_ready = status & TP_STATUS_CSUMNOTREADY == 0;
                    }
                    cmsg = libc::CMSG_NXTHDR(&header, cmsg);
                }
            }
            if let Some(payload) =
                udp_payload_to(&buffer[..n as usize], CLIENT_PORT, checksum_ready)
            {
                return Ok(Some(payload.to_vec()));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

/// The RFC 1071 ones'-complement sum, folded, not yet inverted.
fn ones_complement_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The UDP checksum of `udp` (header with a zero checksum field, and data).
fn udp_checksum(source: Ipv4Addr, destination: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&source.octets());
    pseudo[4..8].copy_from_slice(&destination.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    let sum = ones_complement_sum(ones_complement_sum(0, &pseudo), udp);
    match !(sum as u16) {
        // RFC 768: a computed 0 is sent as all ones.
        0 => 0xffff,
        checksum => checksum,
    }
}

/// An IPv4 packet carrying one UDP datagram.
pub fn udp_ipv4_packet(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    source_port: u16,
    destination_port: u16,
    ip_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total_len = 20 + udp_len;
    let mut packet = Vec::with_capacity(total_len);
    packet.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; TOS low delay (as dhclient)
    packet.extend_from_slice(&(total_len as u16).to_be_bytes());
    packet.extend_from_slice(&ip_id.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 64, 17, 0, 0]); // no fragment, TTL 64, UDP, checksum later
    packet.extend_from_slice(&source.octets());
    packet.extend_from_slice(&destination.octets());
    let header_checksum = !(ones_complement_sum(0, &packet[..20]) as u16);
    packet[10..12].copy_from_slice(&header_checksum.to_be_bytes());
    packet.extend_from_slice(&source_port.to_be_bytes());
    packet.extend_from_slice(&destination_port.to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    let checksum = udp_checksum(source, destination, &packet[20..]);
    packet[26..28].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// The UDP payload of an IPv4 packet to `port`, if it is one: header
/// checksum and lengths verified, the UDP checksum too when not 0 and
/// `udp_checksum_ready` (false when the kernel reports the sum left to
/// hardware); fragments refused.
pub fn udp_payload_to(packet: &[u8], port: u16, udp_checksum_ready: bool) -> Option<&[u8]> {
    let version_ihl = *packet.first()?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 || packet.len() < header_len + 8 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let fragment = u16::from_be_bytes([packet[6], packet[7]]);
    if total_len < header_len + 8
        || total_len > packet.len()
        || fragment & 0x3fff != 0
        || packet[9] != 17
    {
        return None;
    }
    if ones_complement_sum(0, &packet[..header_len]) != 0xffff {
        return None;
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let udp = &packet[header_len..total_len];
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    let udp = &udp[..udp_len];
    if udp_checksum_ready && udp[6..8] != [0, 0] {
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&source.octets());
        pseudo[4..8].copy_from_slice(&destination.octets());
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if ones_complement_sum(ones_complement_sum(0, &pseudo), udp) != 0xffff {
            return None;
        }
    }
    Some(&udp[8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_verify_and_corruption_is_refused() {
        let payload = b"hello dhcp!";
        let packet = udp_ipv4_packet(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            7,
            payload,
        );
        assert_eq!(packet.len(), 20 + 8 + payload.len());
        assert_eq!(udp_payload_to(&packet, 67, true), Some(&payload[..]));
        assert_eq!(udp_payload_to(&packet, 68, true), None);
        for i in 0..packet.len() {
            let mut bad = packet.clone();
            bad[i] ^= 0x01;
            // A flipped bit anywhere must not yield the original payload to port 67
            // (the ports are checked, the rest is covered by the checksums).
            assert_ne!(
                udp_payload_to(&bad, 67, true),
                Some(&payload[..]),
                "byte {i}"
            );
        }
        assert_eq!(udp_payload_to(&packet[..25], 67, true), None);
    }

    #[test]
    fn reads_interfaces_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("class/net/ib0");
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [
            ("ifindex", "4\n"),
            ("type", "32\n"),
            (
                "address",
                "80:00:00:48:fe:80:00:00:00:00:00:00:f4:52:14:03:00:38:39:81\n",
            ),
            (
                "broadcast",
                "00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff\n",
            ),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        let ib0 = Interface::from_sysfs(root.path(), "ib0").unwrap();
        assert_eq!((ib0.index, ib0.arp_type, ib0.broadcast.len()), (4, 32, 20));
        assert_eq!(
            ib0.ipoib_guid(),
            Some([0xf4, 0x52, 0x14, 0x03, 0x00, 0x38, 0x39, 0x81])
        );
        let err = Interface::from_sysfs(root.path(), "eth9").unwrap_err();
        assert!(err.to_string().contains("eth9"), "{err}");
    }
}
