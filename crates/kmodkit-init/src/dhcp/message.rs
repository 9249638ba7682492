//! DHCPv4 messages as RFC 2131 §2 lays them out on the wire.
//!
//! ```text
//! offset size field
//!      0    1 op       1 BOOTREQUEST, 2 BOOTREPLY
//!      1    1 htype    ARP hardware type: 1 Ethernet, 32 InfiniBand (RFC 4390)
//!      2    1 hlen     length of chaddr in use: 6 Ethernet, 0 InfiniBand
//!      3    1 hops
//!      4    4 xid      transaction id chosen by the client
//!      8    2 secs     seconds since the client began
//!     10    2 flags    bit 15: BROADCAST (reply by link broadcast)
//!     12    4 ciaddr   16 yiaddr   20 siaddr (next server)   24 giaddr
//!     28   16 chaddr   client hardware address
//!     44   64 sname    server host name, or options (overload 52 = 2|3)
//!    108  128 file     boot file name, or options (overload 52 = 1|3)
//!    236    4 magic cookie 99.130.83.99
//!    240    … options: code, length, data; 0 pad, 255 end
//! ```
//!
//! Decoding follows RFC 2131 §4.1 and RFC 3396: options are read from the
//! `options` field, then `file`, then `sname` when option 52 says they are
//! overloaded; options of one code that occur more than once are
//! concatenated. The decoder never panics; every length is checked.

use std::net::Ipv4Addr;

use thiserror::Error;

/// BOOTP `op`: a message from client to server.
pub const BOOTREQUEST: u8 = 1;
/// BOOTP `op`: a message from server to client.
pub const BOOTREPLY: u8 = 2;
/// ARP hardware type of Ethernet (`htype`), RFC 1700.
pub const HTYPE_ETHERNET: u8 = 1;
/// ARP hardware type of InfiniBand (`htype`), RFC 4390 §2.1.
pub const HTYPE_INFINIBAND: u8 = 32;
/// The BROADCAST bit of `flags` (RFC 2131 §2, figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;
/// RFC 2131 §3: the four bytes that start the options field.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Bytes before the options: the fixed header and the magic cookie.
pub const HEADER_LEN: usize = 240;

/// Option codes used by the client (RFC 2132 unless noted).
pub mod code {
    /// Pad (no length byte).
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers, in order of preference.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Interface MTU.
    pub const MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST_ADDRESS: u8 = 28;
    /// Requested IP address (DHCPREQUEST in SELECTING).
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time in seconds.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload: 1 file, 2 sname, 3 both hold options.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    /// Error text (in DHCPNAK).
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size the client accepts.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal time T1.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding time T2.
    pub const REBINDING_TIME: u8 = 59;
    /// Vendor class identifier.
    pub const VENDOR_CLASS: u8 = 60;
    /// Client identifier (RFC 2132 §9.14, RFC 4361).
    pub const CLIENT_ID: u8 = 61;
    /// TFTP server name.
    pub const TFTP_SERVER: u8 = 66;
    /// Boot file name.
    pub const BOOTFILE: u8 = 67;
    /// End of options (no length byte).
    pub const END: u8 = 255;
}

/// The DHCP message type (option 53), RFC 2132 §9.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 1
    Discover,
    /// 2
    Offer,
    /// 3
    Request,
    /// 4
    Decline,
    /// 5
    Ack,
    /// 6
    Nak,
    /// 7
    Release,
    /// 8
    Inform,
}

impl MessageType {
    /// The type of an option 53 value, `None` for values RFC 2132 does not define.
    pub fn from_u8(value: u8) -> Option<MessageType> {
        Some(match value {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    /// The option 53 value.
    pub fn to_u8(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
        }
    }

    /// The name RFC 2131 uses (`DHCPOFFER`).
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Offer => "DHCPOFFER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Ack => "DHCPACK",
            MessageType::Nak => "DHCPNAK",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
        }
    }
}

/// One option: its code and its (possibly concatenated, RFC 3396) data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOption {
    /// Option code, never 0 (pad), 52 (overload) or 255 (end) in a decoded message.
    pub code: u8,
    /// Option data; longer than 255 bytes is split into several options on encode.
    pub data: Vec<u8>,
}

/// A DHCPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// [`BOOTREQUEST`] or [`BOOTREPLY`].
    pub op: u8,
    /// ARP hardware type.
    pub htype: u8,
    /// Length of the hardware address in `chaddr`.
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began acquiring.
    pub secs: u16,
    /// Flags; [`FLAG_BROADCAST`] is the only one defined.
    pub flags: u16,
    /// Client address (only when the client already has one).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: the one offered or assigned.
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP) address.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address, `hlen` bytes used.
    pub chaddr: [u8; 16],
    /// Server host name (zeroed when it held overloaded options).
    pub sname: [u8; 64],
    /// Boot file name (zeroed when it held overloaded options).
    pub file: [u8; 128],
    /// Options in the order first seen; one entry per code.
    pub options: Vec<DhcpOption>,
}

/// Why bytes are not a DHCP message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Shorter than the fixed header plus magic cookie.
    #[error(
        "DHCP message is {len} bytes, shorter than the {HEADER_LEN}-byte header and magic cookie"
    )]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// The magic cookie is not 99.130.83.99 (a BOOTP message or garbage).
    #[error("no DHCP magic cookie at offset 236 (found {found:02x?}): not a DHCP message")]
    BadCookie {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// An option's length runs past the end of its field.
    #[error("option {code} at offset {offset} of the {field} field has length {len}, past the field's end")]
    TruncatedOption {
        /// Which field: `options`, `file` or `sname`.
        field: &'static str,
        /// Option code.
        code: u8,
        /// Offset of the code byte within that field.
        offset: usize,
        /// The length byte.
        len: usize,
    },
    /// Option 52 with a value other than 1, 2 or 3, or not one byte long.
    #[error("option overload (52) has value {value:?}; RFC 2132 §9.3 allows 1, 2 or 3")]
    BadOverload {
        /// The option's data.
        value: Vec<u8>,
    },
}

impl Message {
    /// A BOOTREQUEST with everything zero but `htype`, `hlen`, `xid` and `chaddr`.
    pub fn request(htype: u8, hlen: u8, xid: u32, chaddr: [u8; 16]) -> Message {
        Message {
            op: BOOTREQUEST,
            htype,
            hlen,
            hops: 0,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            sname: [0; 64],
            file: [0; 128],
            options: Vec::new(),
        }
    }

    /// Decode a message from a UDP payload.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        let cookie = [bytes[236], bytes[237], bytes[238], bytes[239]];
        if cookie != MAGIC_COOKIE {
            return Err(DecodeError::BadCookie { found: cookie });
        }
        let addr =
            |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
        let mut message = Message {
            op: bytes[0],
            htype: bytes[1],
            hlen: bytes[2],
            hops: bytes[3],
            xid: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            secs: u16::from_be_bytes([bytes[8], bytes[9]]),
            flags: u16::from_be_bytes([bytes[10], bytes[11]]),
            ciaddr: addr(12),
            yiaddr: addr(16),
            siaddr: addr(20),
            giaddr: addr(24),
            chaddr: [0; 16],
            sname: [0; 64],
            file: [0; 128],
            options: Vec::new(),
        };
        message.chaddr.copy_from_slice(&bytes[28..44]);
        message.sname.copy_from_slice(&bytes[44..108]);
        message.file.copy_from_slice(&bytes[108..236]);

        let mut overload = None;
        parse_options(
            &bytes[HEADER_LEN..],
            "options",
            &mut message.options,
            &mut overload,
        )?;
        match overload {
            None => {}
            Some(ref value)
                if value.as_slice() == [1]
                    || value.as_slice() == [2]
                    || value.as_slice() == [3] =>
            {
                let value = value[0];
                // RFC 2131 §4.1: options, then file, then sname.
                if value & 1 != 0 {
                    let file = message.file;
                    message.file = [0; 128];
                    parse_options(&file, "file", &mut message.options, &mut None)?;
                }
                if value & 2 != 0 {
                    let sname = message.sname;
                    message.sname = [0; 64];
                    parse_options(&sname, "sname", &mut message.options, &mut None)?;
                }
            }
            Some(value) => return Err(DecodeError::BadOverload { value }),
        }
        Ok(message)
    }

    /// Encode the message; every option goes into the options field (no
    /// overload), data longer than 255 bytes split per RFC 3396.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for addr in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&addr.octets());
        }
        out.extend_from_slice(&self.chaddr);
        out.extend_from_slice(&self.sname);
        out.extend_from_slice(&self.file);
        out.extend_from_slice(&MAGIC_COOKIE);
        for option in &self.options {
            if option.code == code::PAD || option.code == code::END {
                continue;
            }
            if option.data.is_empty() {
                out.extend_from_slice(&[option.code, 0]);
            }
            for chunk in option.data.chunks(255) {
                out.push(option.code);
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        }
        out.push(code::END);
        // RFC 2131 §2: relays and some servers expect at least a 300-byte BOOTP message.
        while out.len() < 300 {
            out.push(code::PAD);
        }
        out
    }

    /// The data of option `code`, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|o| o.code == code)
            .map(|o| o.data.as_slice())
    }

    /// Set option `code`, replacing an earlier value.
    pub fn set_option(&mut self, code: u8, data: Vec<u8>) {
        match self.options.iter_mut().find(|o| o.code == code) {
            Some(option) => option.data = data,
            None => self.options.push(DhcpOption { code, data }),
        }
    }

    /// The message type (option 53), `None` if absent or undefined.
    pub fn message_type(&self) -> Option<MessageType> {
        match self.option(code::MESSAGE_TYPE) {
            Some([value]) => MessageType::from_u8(*value),
            _ => None,
        }
    }

    /// Option `code` read as one IPv4 address.
    pub fn option_addr(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code) {
            Some(&[a, b, c, d]) => Some(Ipv4Addr::new(a, b, c, d)),
            _ => None,
        }
    }

    /// Option `code` read as a list of IPv4 addresses (a trailing partial address ignored).
    pub fn option_addrs(&self, code: u8) -> Vec<Ipv4Addr> {
        self.option(code)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            .collect()
    }

    /// Option `code` read as a 32-bit unsigned number.
    pub fn option_u32(&self, code: u8) -> Option<u32> {
        match self.option(code) {
            Some(&[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    /// Option `code` read as text (lossy UTF-8, trailing NULs dropped).
    pub fn option_text(&self, code: u8) -> Option<String> {
        self.option(code).map(c_text)
    }

    /// The `sname` field as text, `None` when empty.
    pub fn server_name(&self) -> Option<String> {
        Some(c_text(&self.sname)).filter(|s| !s.is_empty())
    }

    /// The `file` field as text, `None` when empty.
    pub fn boot_file(&self) -> Option<String> {
        Some(c_text(&self.file)).filter(|s| !s.is_empty())
    }
}

/// Text of a NUL-terminated field or option.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Parse one option space, appending to `options` (same code concatenated,
/// RFC 3396 §5) and recording option 52 in `overload`.
fn parse_options(
    field: &[u8],
    name: &'static str,
    options: &mut Vec<DhcpOption>,
    overload: &mut Option<Vec<u8>>,
) -> Result<(), DecodeError> {
    let mut at = 0;
    while at < field.len() {
        let option_code = field[at];
        match option_code {
            code::PAD => {
                at += 1;
                continue;
            }
            code::END => return Ok(()),
            _ => {}
        }
        let Some(&len) = field.get(at + 1) else {
            return Err(DecodeError::TruncatedOption {
                field: name,
                code: option_code,
                offset: at,
                len: 0,
            });
        };
        let len = usize::from(len);
        let Some(data) = field.get(at + 2..at + 2 + len) else {
            return Err(DecodeError::TruncatedOption {
                field: name,
                code: option_code,
                offset: at,
                len,
            });
        };
        if option_code == code::OVERLOAD {
            // Only meaningful in the options field; elsewhere RFC 2131 does not allow it.
            if name == "options" {
                overload
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(data);
            }
        } else {
            match options.iter_mut().find(|o| o.code == option_code) {
                Some(option) => option.data.extend_from_slice(data),
                None => options.push(DhcpOption {
                    code: option_code,
                    data: data.to_vec(),
                }),
            }
        }
        at += 2 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Message {
        let mut m = Message::request(HTYPE_ETHERNET, 6, 0xdead_beef, [0; 16]);
        m.chaddr[..6].copy_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        m.flags = FLAG_BROADCAST;
        m.set_option(code::MESSAGE_TYPE, vec![1]);
        m.set_option(code::CLIENT_ID, vec![0xff; 20]);
        m.set_option(code::VENDOR_CLASS, vec![b'x'; 300]);
        m
    }

    #[test]
    fn round_trip_splits_and_joins_long_options() {
        let m = sample();
        let bytes = m.encode();
        assert!(bytes.len() >= 300);
        assert_eq!(&bytes[236..240], &MAGIC_COOKIE);
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn overloaded_file_and_sname_are_read_in_rfc_order() {
        let mut bytes = Message::request(1, 6, 1, [0; 16]).encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&[
            code::OVERLOAD,
            1,
            3,
            code::MESSAGE_TYPE,
            1,
            2,
            code::HOSTNAME,
            1,
            b'a',
            255,
        ]);
        // file: hostname continues, then a bootfile option.
        bytes[108..114].copy_from_slice(&[code::HOSTNAME, 1, b'b', code::BOOTFILE, 1, b'f']);
        bytes[114] = 255;
        // sname: hostname continues again.
        bytes[44..48].copy_from_slice(&[code::HOSTNAME, 1, b'c', 255]);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(m.message_type(), Some(MessageType::Offer));
        assert_eq!(m.option_text(code::HOSTNAME).as_deref(), Some("abc"));
        assert_eq!(m.option_text(code::BOOTFILE).as_deref(), Some("f"));
        assert_eq!(m.boot_file(), None);
        assert_eq!(m.server_name(), None);
        assert!(m.option(code::OVERLOAD).is_none());
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            Message::decode(&[0; 100]),
            Err(DecodeError::TooShort { len: 100 })
        );
        let mut bytes = sample().encode();
        bytes[236] = 0;
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::BadCookie { .. })
        ));
        let mut bytes = sample().encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&[code::HOSTNAME, 10, b'a']);
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::TruncatedOption { code: 12, .. })
        ));
        let mut bytes = sample().encode();
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&[code::OVERLOAD, 1, 7, 255]);
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::BadOverload { .. })
        ));
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<[u8; 4]>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<[u32; 4]>(),
            any::<[u8; 16]>(),
            proptest::collection::btree_map(
                1u8..=254,
                proptest::collection::vec(any::<u8>(), 0..600),
                0..8,
            ),
        )
            .prop_map(|(head, xid, secs, flags, addrs, chaddr, options)| {
                let mut m = Message::request(head[1], head[2], xid, chaddr);
                m.op = head[0];
                m.hops = head[3];
                m.secs = secs;
                m.flags = flags;
                m.ciaddr = addrs[0].into();
                m.yiaddr = addrs[1].into();
                m.siaddr = addrs[2].into();
                m.giaddr = addrs[3].into();
                m.sname[..3].copy_from_slice(b"srv");
                m.file[..4].copy_from_slice(b"boot");
                m.options = options
                    .into_iter()
                    .filter(|(code, _)| *code != code::OVERLOAD)
                    .map(|(code, data)| DhcpOption { code, data })
                    .collect();
                m
            })
    }

    proptest! {
        #[test]
        fn any_message_round_trips(m in arb_message()) {
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_reencode_stably(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..700),
            cookie in any::<bool>(),
        ) {
            // Half the inputs get the cookie so the option parser is exercised.
            if cookie && bytes.len() >= HEADER_LEN {
                bytes[236..240].copy_from_slice(&MAGIC_COOKIE);
            }
            if let Ok(m) = Message::decode(&bytes) {
                prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
            }
        }
    }
}
