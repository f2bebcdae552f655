//! The host's SNAT table in nftables: [`rules`] writes it and decodes it;
//! the socket, ownership marks, read-back and event watching are the
//! shared `noverlay-nft` crate.

pub mod rules;
