//! DHCPv4 for the initrd: the wire format ([`message`]), the client
//! identifiers a ConnectX port sends in each boot stage ([`client_id`]), the
//! client state machine and its lease ([`client`]), the raw packet socket it
//! runs on ([`socket`]), and the server configuration that maps every
//! identifier of a node to one address ([`server_config`]).

pub mod client;
pub mod client_id;
pub mod message;
pub mod server_config;
pub mod socket;
